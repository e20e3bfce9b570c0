"""Planning time for an input of many small Parquet files in a bucket (issue 13's target:
10,000 files under 10 s, with no request per file beyond the listing and the footers).

    .venv-test/bin/python benches/plan_10k.py [--files 10000] [--batchscore target/release/batchscore]

Runs against a plain `moto_server` (threaded, as it ships), not the one-request-at-a-time
test server: .venv-test holds both once `scripts/test` has run. It uploads --files copies of
sample_data/synthetic/lookup.parquet (2.5 KB each), times `batchscore plan` over them, and
counts the requests the plan made from moto's own log. For scale it also times the same
number of ranged GETs from Python's S3 client, which is what the server itself can serve.
"""

import argparse
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import time

import boto3
import botocore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "sample_data", "synthetic", "lookup.parquet")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def client(port):
    cfg = botocore.config.Config(max_pool_connections=32)
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="k",
                        aws_secret_access_key="s", region_name="us-east-1", config=cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--batchscore", default=os.path.join(REPO, "target/release/batchscore"))
    a = ap.parse_args()
    port = free_port()
    work = tempfile.mkdtemp(prefix="plan10k-")
    log = open(os.path.join(work, "moto.log"), "w+")
    moto = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                             "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        s3 = client(port)
        s3.create_bucket(Bucket="plan10k")
        body = open(SAMPLE, "rb").read()
        keys = [f"files/part-{i:05d}.parquet" for i in range(a.files)]
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda k: s3.put_object(Bucket="plan10k", Key=k, Body=body), keys))
        job = os.path.join(work, "job.toml")
        with open(job, "w") as f:
            f.write(f'''name = "plan10k"
[input]
uri = "s3://plan10k/files/"
[model]
uri = "{os.path.join(REPO, 'sample_data/synthetic/lookup.onnx')}"
[output]
uri = "{os.path.join(work, 'out')}/"
passthrough = ["row_id"]
[storage]
endpoint = "http://127.0.0.1:{port}"
allow_http = true
''')
        env = dict(os.environ, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="us-east-1")
        env.setdefault("ORT_DYLIB_PATH", os.path.join(REPO, ".ort/lib/libonnxruntime.so.1.31.1"))
        log.flush()
        before = sum(1 for _ in open(log.name))
        start = time.time()
        out = subprocess.run([a.batchscore, "plan", job, "--shards", "4"], env=env,
                             capture_output=True, text=True)
        seconds = time.time() - start
        if out.returncode != 0:
            sys.exit(f"batchscore plan failed:\n{out.stderr}")
        log.flush()
        lines = open(log.name).read().splitlines()[before:]
        gets = sum(1 for l in lines if "GET /plan10k/files/" in l)
        lists = sum(1 for l in lines if "GET /plan10k?" in l)
        start = time.time()
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            list(ex.map(lambda k: s3.get_object(Bucket="plan10k", Key=k, Range="bytes=-1024")["Body"].read(), keys))
        floor = time.time() - start
        print(f"{a.files} files: batchscore plan took {seconds:.1f} s, {len(lines)} requests "
              f"({gets} object GETs, {lists} list pages); "
              f"{a.files} ranged GETs from Python's S3 client took {floor:.1f} s")
        print(out.stdout.splitlines()[0])
    finally:
        moto.kill()


if __name__ == "__main__":
    main()
