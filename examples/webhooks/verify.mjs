// Verify a dramatiq-ray webhook in Node.js (18+), with no dependency:
//   WEBHOOK_SECRET=... node verify.mjs <raw body file> "<Dramatiq-Ray-Signature header>"
import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

export function verify(rawBody, header, secrets, toleranceSeconds = 300) {
  const fields = header.split(",").map((part) => {
    const at = part.indexOf("=");
    return [part.slice(0, at).trim(), part.slice(at + 1).trim()];
  });
  const t = Number(fields.find(([key]) => key === "t")?.[1]);
  const given = fields.filter(([key]) => key === "v1").map(([, hex]) => Buffer.from(hex, "hex"));
  if (!Number.isInteger(t) || given.length === 0) throw new Error("malformed signature header");
  if (Math.abs(Date.now() / 1000 - t) > toleranceSeconds) throw new Error("timestamp outside the tolerance");
  const matches = secrets.some((secret) => {
    const expected = createHmac("sha256", secret).update(`${t}.`).update(rawBody).digest();
    return given.some((signature) => signature.length === expected.length && timingSafeEqual(signature, expected));
  });
  if (!matches) throw new Error("no signature matches");
  return JSON.parse(rawBody.toString("utf8"));
}

const [bodyFile, header] = process.argv.slice(2);
try {
  const event = verify(readFileSync(bodyFile), header, [process.env.WEBHOOK_SECRET]);
  console.log(`valid: ${event.message_id} ${event.status}`);
} catch (error) {
  console.error(error.message);
  process.exit(1);
}
