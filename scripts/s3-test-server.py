"""moto's S3 server for the tests, with one change: requests are handled one at a time.

    .venv-test/bin/python scripts/s3-test-server.py -H 127.0.0.1 -p PORT

moto checks S3's conditional writes (If-None-Match, If-Match) and then writes, without a
lock, so two simultaneous conditional puts can both succeed; AWS S3 makes them atomic, and
batchscore's commit relies on that. Serializing the requests gives moto the same guarantee.
Connections are still served by threads, so keep-alive clients do not block each other.

With BATCHSCORE_TEST_S3_HEADER_LOG=FILE set, every PUT and POST is also appended to FILE as
one JSON line: its method, path, query and the server-side encryption headers it carried
(the tests check that every object batchscore writes asked for encryption). Unset, nothing
is recorded.
"""

import argparse
import json
import os
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

parser = argparse.ArgumentParser()
parser.add_argument("-H", "--host", default="127.0.0.1")
parser.add_argument("-p", "--port", type=int, required=True)
args = parser.parse_args()
os.environ.setdefault("MOTO_PORT", str(args.port))

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
header_log = os.environ.get("BATCHSCORE_TEST_S3_HEADER_LOG")


def record(environ):
    if not header_log or environ["REQUEST_METHOD"] not in ("PUT", "POST"):
        return
    line = {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "sse": environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION"),
        "kms_key_id": environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_AWS_KMS_KEY_ID"),
        "copy_source": environ.get("HTTP_X_AMZ_COPY_SOURCE"),
    }
    with open(header_log, "a") as f:
        f.write(json.dumps(line) + "\n")


def one_at_a_time(environ, start_response):
    with lock:
        record(environ)
        # The whole response is produced inside the lock.
        return list(app(environ, start_response))


run_simple(args.host, args.port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler)
