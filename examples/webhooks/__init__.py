"""The webhooks example: signed webhooks when messages are done, verified by a receiver; results awaited from
asyncio."""
