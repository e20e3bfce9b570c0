"""HMAC-SHA256 of each value under a key, with Python's own hmac module: the oracle of the
`hash` privacy policy. Usage: hmac_sha256.py KEY hex|base64 VALUE... ; prints a JSON list."""
import base64
import hashlib
import hmac
import json
import sys

key, encoding, *values = sys.argv[1:]
macs = [hmac.new(key.encode(), v.encode(), hashlib.sha256).digest() for v in values]
if encoding == "hex":
    print(json.dumps([m.hex() for m in macs]))
else:
    print(json.dumps([base64.b64encode(m).decode() for m in macs]))
