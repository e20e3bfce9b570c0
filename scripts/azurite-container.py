"""Creates a blob container in Azurite (waiting for it to start), for the Azure tests.

object_store reads and writes blobs but does not create containers, so `scripts/test` makes
the one the tests share. The request is signed with the emulator's well-known account key
(public, documented by Microsoft), SharedKey scheme, standard library only.
"""
import base64
import hashlib
import hmac
import sys
import time
import urllib.error
import urllib.request
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
KEY = base64.b64decode(
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def create(url: str, container: str) -> int:
    date, version, ctype = formatdate(usegmt=True), "2021-08-06", "application/octet-stream"
    # Verb, then 11 standard headers (only Content-Type set), canonical headers and resource.
    fields = ["PUT", "", "", "", "", ctype, "", "", "", "", "", ""]
    to_sign = "\n".join(fields) + (
        f"\nx-ms-date:{date}\nx-ms-version:{version}\n"
        f"/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
    )
    sig = base64.b64encode(hmac.new(KEY, to_sign.encode(), hashlib.sha256).digest()).decode()
    req = urllib.request.Request(
        f"{url}/{ACCOUNT}/{container}?restype=container",
        method="PUT",
        data=b"",
        headers={
            "x-ms-date": date,
            "x-ms-version": version,
            "Content-Type": ctype,
            "Authorization": f"SharedKey {ACCOUNT}:{sig}",
        },
    )
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def main() -> None:
    url, container = sys.argv[1], sys.argv[2]
    for _ in range(300):
        try:
            status = create(url, container)
        except OSError:
            time.sleep(0.1)
            continue
        # 409: it exists already, which is as good.
        if status in (201, 409):
            return
        sys.exit(f"creating container {container} in {url}: HTTP {status}")
    sys.exit(f"Azurite did not start on {url}")


if __name__ == "__main__":
    main()
