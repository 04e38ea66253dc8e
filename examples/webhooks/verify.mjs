// Verify a dramatiq-ray webhook in Node.js with the Standard Webhooks library (npm install standardwebhooks):
//   WEBHOOK_SECRET=whsec_... node verify.mjs <raw body file> <headers file: a JSON object of the request's headers>
import { readFileSync } from "node:fs";
import { Webhook } from "standardwebhooks";

const [bodyFile, headersFile] = process.argv.slice(2);
const webhook = new Webhook(process.env.WEBHOOK_SECRET);
try {
  // The body exactly as received (a Buffer), and headers with webhook-id, webhook-timestamp, webhook-signature.
  const event = webhook.verify(readFileSync(bodyFile), JSON.parse(readFileSync(headersFile, "utf8")));
  console.log(`valid: ${event.message_id} ${event.status}`);
} catch (error) {
  console.error(`refused: ${error.message}`);
  process.exit(1);
}
