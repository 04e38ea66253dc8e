# Verify a dramatiq-ray webhook with openssl: WEBHOOK_SECRET and SIGNATURE (the header's value) in the
# environment, the raw body in a file:  bash verify.sh body.json
t=${SIGNATURE#t=}; t=${t%%,*}
expected=$({ printf '%s.' "$t"; cat "$1"; } | openssl dgst -sha256 -hmac "$WEBHOOK_SECRET" -r | cut -d' ' -f1)
age=$(( $(date +%s) - t )); [ "${age#-}" -le 300 ] || { echo STALE; exit 1; }
case ",$SIGNATURE," in *",v1=$expected,"*) echo valid ;; *) echo INVALID; exit 1 ;; esac
