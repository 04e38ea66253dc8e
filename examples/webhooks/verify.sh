# Verify a dramatiq-ray webhook with openssl: WEBHOOK_SECRET (whsec_...) and the request's headers as WEBHOOK_ID,
# WEBHOOK_TIMESTAMP and WEBHOOK_SIGNATURE in the environment, the raw body in a file:  bash verify.sh body.json
key=$(printf '%s' "${WEBHOOK_SECRET#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
expected=$({ printf '%s.%s.' "$WEBHOOK_ID" "$WEBHOOK_TIMESTAMP"; cat "$1"; } |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key" -binary | base64)
age=$(( $(date +%s) - WEBHOOK_TIMESTAMP )); [ "${age#-}" -le 300 ] || { echo STALE; exit 1; }
case " $WEBHOOK_SIGNATURE " in *" v1,$expected "*) echo valid ;; *) echo INVALID; exit 1 ;; esac
