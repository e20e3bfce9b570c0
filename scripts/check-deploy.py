"""The checks of scripts/check-deploy that need Python: run by it inside .venv-deploy.

Each check prints `OK   <file>: what was checked` or `FAIL <file>: why`; the exit status is
the number of failures (0: all passed). Kubernetes' schemas (kubernetes-validate), hadolint
and shellcheck run from the shell script; here:

- the job specs (the ConfigMap's and AWS Batch's) against schemas/job.schema.json, the JSON
  Schema batchscore generates from its own spec types (unknown keys are errors there too);
- what no schema knows: that the Jobs' shard counts, exit codes, run ids, users and writable
  paths agree with each other, with the image and with batchscore's behaviour;
- the CronJob's sh script: Kubernetes' $(VAR) expansion leaves it as written, and run with a
  stub batchscore it passes the day before the Job's scheduled minute as ds;
- the AWS Batch JSON against botocore's own model of RegisterJobDefinition and SubmitJob
  (ParamValidator: names, types, required members; and every enum value).
"""

import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import botocore.session
import jsonschema
import yaml
from botocore.validate import ParamValidator

failures = 0


def ok(path, what):
    print(f"OK   {path}: {what}")


def fail(path, why):
    global failures
    failures += 1
    print(f"FAIL {path}: {why}")


def dockerfile_arg(path, name):
    m = re.search(rf"^ARG {name}=(\S+)$", open(path).read(), re.M)
    return m.group(1) if m else None


SCHEMA = json.load(open("schemas/job.schema.json"))
VALIDATOR = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
APP_UID = int(dockerfile_arg("deploy/Dockerfile", "APP_UID"))
ORT_VERSION = re.search(r"^version=(\S+)$", open("scripts/fetch-ort").read(), re.M).group(1)


def check_spec(path, text):
    """A job spec parses as TOML and fits batchscore's JSON Schema."""
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(path, f"not TOML: {e}")
        return None
    errors = sorted(VALIDATOR.iter_errors(spec), key=lambda e: list(e.path))
    if errors:
        for e in errors:
            fail(path, f"[{'.'.join(map(str, e.path))}] {e.message}")
        return None
    ok(path, "parses and fits schemas/job.schema.json")
    return spec


def dockerignore_allows(path):
    """Whether .dockerignore (a deny-all list with `!` exceptions) lets `path` in."""
    allowed = [
        line[1:].rstrip("/")
        for line in open(".dockerignore").read().splitlines()
        if line.startswith("!")
    ]
    return any(path == a or path.startswith(a + "/") for a in allowed)


def check_images():
    """The images' ONNX Runtime is the one the binary is built for; the uid is the manifests';
    the build context lets in what they copy; the builder stage has all the crate needs."""
    # The builder stage copies Cargo.toml, Cargo.lock and src/ alone: a build script or a file
    # included from outside src/ would break it, and no build here runs that stage.
    outside = []
    for root, _, files in os.walk("src"):
        for name in files:
            text = open(os.path.join(root, name), errors="replace").read()
            for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
                target = os.path.normpath(os.path.join(root, m.group(1)))
                if not target.startswith("src" + os.sep):
                    outside.append(f"{os.path.join(root, name)} includes {m.group(1)}")
    if os.path.exists("build.rs") or "build =" in open("Cargo.toml").read():
        outside.append("the crate has a build script")
    if outside:
        fail("deploy/Dockerfile", "the builder stage copies only Cargo.toml, Cargo.lock and src/, "
             "but " + "; ".join(outside))
    else:
        ok("deploy/Dockerfile", "the builder stage's Cargo.toml, Cargo.lock and src/ are the whole crate")
    for path in ("deploy/Dockerfile", "deploy/Dockerfile.gpu"):
        problems = []
        for m in re.finditer(r"^COPY (?!--from)(.+) \S+$", open(path).read(), re.M):
            for source in m.group(1).split():
                if not dockerignore_allows(source.rstrip("/")):
                    problems.append(f".dockerignore keeps {source} out of the context")
        if dockerfile_arg(path, "ORT_VERSION") != ORT_VERSION:
            problems.append(f"ORT_VERSION is not scripts/fetch-ort's {ORT_VERSION}")
        if dockerfile_arg(path, "APP_UID") != str(APP_UID):
            problems.append(f"APP_UID differs from deploy/Dockerfile's {APP_UID}")
        if problems:
            fail(path, "; ".join(problems))
        else:
            ok(path, f"ONNX Runtime {ORT_VERSION} as scripts/fetch-ort; uid {APP_UID}")


def k8s_expand(text, names):
    """Kubernetes' expansion of $(NAME) in command and args (third_party/forked/golang/
    expansion): $$ is a literal $, $(NAME) is replaced when NAME is a container variable, and
    anything else is kept as written."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end >= 0:
                    name = text[i + 2 : end]
                    out.append(f"<{name}>" if name in names else text[i : end + 1])
                    i = end + 1
                    continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def check_cron_script(path, container):
    """The CronJob's script reaches sh as written and computes ds from the Job's name."""
    command = container.get("command", []) + container.get("args", [])
    if command[:2] != ["/bin/sh", "-c"] or len(command) != 3:
        fail(path, "the CronJob's container should run /bin/sh -c SCRIPT")
        return
    script = command[2]
    names = {e["name"] for e in container.get("env", [])}
    if k8s_expand(script, names) != script:
        fail(path, "Kubernetes' $(VAR) expansion would change the script: escape $( as $$(")
        return
    with tempfile.TemporaryDirectory() as tmp:
        stub = os.path.join(tmp, "batchscore")
        with open(stub, "w") as f:
            f.write('#!/bin/sh\nprintf "%s\\n" "$@"\n')
        os.chmod(stub, 0o755)
        env = {"PATH": f"{tmp}:/usr/bin:/bin"}
        # The job the controller makes for the 02:30 UTC run of 2026-11-28: ds is the 27th.
        scheduled = datetime.datetime(2026, 11, 28, 2, 30, tzinfo=datetime.timezone.utc)
        minutes = int(scheduled.timestamp()) // 60
        run = subprocess.run(
            ["/bin/sh", "-c", script],
            env={**env, "JOB_NAME": f"batchscore-churn-nightly-{minutes}"},
            capture_output=True,
            text=True,
        )
        args = run.stdout.split("\n")
        if run.returncode != 0 or "ds=2026-11-27" not in args:
            fail(path, f"the script ran {run.returncode}, args {args}, stderr {run.stderr!r}")
            return
        bad = subprocess.run(
            ["/bin/sh", "-c", script],
            env={**env, "JOB_NAME": "manual-run"},
            capture_output=True,
            text=True,
        )
        if bad.returncode != 2:
            fail(path, f"a Job name without the minute should exit 2, not {bad.returncode}")
            return
    ok(path, "the CronJob's script survives $(VAR) expansion; ds = the day before the "
       "scheduled minute (2026-11-27 for 2026-11-28T02:30Z); a name without one exits 2")
    with open(os.path.join(os.environ["CHECK_TMP"], "cronjob-script.sh"), "w") as f:
        f.write(script)


def shards_from(command):
    """The N of --shards N (or of [run] shards in no command) in a container's command line."""
    words = " ".join(command).split()
    for i, w in enumerate(words):
        if w == "--shards" and i + 1 < len(words):
            return int(words[i + 1].strip("\"'"))
    return None


def check_job(path, kind, name, job, specs):
    problems = []
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    command = container.get("command", []) + container.get("args", [])
    is_run = "run" in " ".join(command).split()
    limit = 52 if kind == "CronJob" else 63
    if len(name) > limit:
        problems.append(f"the {kind}'s name is longer than {limit} characters")
    if pod.get("restartPolicy") != "Never":
        problems.append("restartPolicy must be Never (podFailurePolicy, and retries are the Job's)")
    rules = job.get("podFailurePolicy", {}).get("rules", [])
    fail_codes = set()
    for r in rules:
        if r["action"] in ("FailIndex", "FailJob") and "onExitCodes" in r:
            if r["onExitCodes"]["operator"] == "In":
                fail_codes |= set(r["onExitCodes"]["values"])
    ignored = any(
        r["action"] == "Ignore"
        and any(c["type"] == "DisruptionTarget" for c in r.get("onPodConditions", []))
        for r in rules
    )
    if not ignored:
        problems.append("no rule Ignores DisruptionTarget (evictions would count as failures)")
    if is_run:
        if not {2, 3} <= fail_codes:
            problems.append("exit codes 2 and 3 must fail the index: a retry cannot fix them")
        if fail_codes & {0, 1, 137, 143}:
            problems.append("a rule fails on 1, 137 or 143, which a retry can fix")
    if job.get("completionMode") == "Indexed":
        shards = shards_from(command)
        counts = {job.get("completions"), job.get("parallelism"), shards}
        if len(counts) != 1:
            problems.append(
                f"completions {job.get('completions')}, parallelism {job.get('parallelism')} "
                f"and --shards {shards} differ"
            )
        if "backoffLimitPerIndex" not in job:
            problems.append("an Indexed run should retry per index (backoffLimitPerIndex)")
        run_id = [e for e in container.get("env", []) if e["name"] == "BATCHSCORE_RUN_ID"]
        field = run_id[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") if run_id else None
        if field != "metadata.labels['batch.kubernetes.io/job-name']":
            problems.append("BATCHSCORE_RUN_ID should come from the job-name label")
        if "--shard" not in " ".join(command).split():
            problems.append("a run of an Indexed Job needs --shard auto")
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot") or sc.get("runAsUser") != APP_UID:
        problems.append(f"the pod should run as non-root uid {APP_UID} (the image's)")
    csc = container.get("securityContext", {})
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if not csc.get("readOnlyRootFilesystem"):
        problems.append("readOnlyRootFilesystem is not set")
    elif is_run and "emptyDir" not in volumes.get(mounts.get("/tmp", {}).get("name"), {}):
        problems.append("with a read-only root, /tmp needs an emptyDir (the model cache)")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation should be false")
    limits = container.get("resources", {}).get("limits", {})
    if "memory" not in limits:
        problems.append("no memory limit: batchscore fits its layout under the cgroup's limit")
    # The spec file the command names is a key of the ConfigMap mounted at its folder.
    spec_path = next((w for w in " ".join(command).split() if w.endswith(".toml")), None)
    spec = None
    if spec_path:
        folder, key = os.path.split(spec_path)
        mount = mounts.get(folder)
        cm = volumes.get(mount["name"], {}).get("configMap", {}).get("name") if mount else None
        if (cm, key) not in specs:
            problems.append(f"{spec_path} is not a key of a ConfigMap mounted at {folder}")
        spec = specs.get((cm, key))  # None when the spec failed its own check (above)
    gpus = limits.get("nvidia.com/gpu")
    if spec is not None:
        device = spec.get("run", {}).get("device", "cpu")
        if (device == "cuda") != bool(gpus):
            problems.append(f"the spec's device is {device!r} but the pod asks for {gpus or 0} GPUs")
        if gpus and "gpu" not in container["image"]:
            problems.append("a GPU pod should run the GPU image (deploy/Dockerfile.gpu)")
    if problems:
        for p in problems:
            fail(path, f"{kind} {name}: {p}")
        return
    what = f"{kind} {name}: restartPolicy, exit codes, user, read-only root, memory limit"
    if job.get("completionMode") == "Indexed":
        what += f", {job['completions']} shards = completions = parallelism, run id from the job name"
    ok(path, what)
    if kind == "CronJob":
        check_cron_script(path, container)


def check_k8s():
    docs = []
    for name in sorted(os.listdir("deploy/k8s")):
        if name.endswith(".yaml"):
            path = f"deploy/k8s/{name}"
            docs += [(path, d) for d in yaml.safe_load_all(open(path)) if d]
    specs = {}
    for path, d in docs:
        if d["kind"] == "ConfigMap":
            for key, text in d.get("data", {}).items():
                if key.endswith(".toml"):
                    spec = check_spec(f"{path} [{key}]", text)
                    specs[(d["metadata"]["name"], key)] = spec
    for path, d in docs:
        if d["kind"] == "Job":
            check_job(path, "Job", d["metadata"]["name"], d["spec"], specs)
        elif d["kind"] == "CronJob":
            check_job(path, "CronJob", d["metadata"]["name"], d["spec"]["jobTemplate"]["spec"], specs)


def enum_errors(value, shape, where=""):
    """Enum values, which botocore's ParamValidator leaves to the service."""
    errors = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                errors += enum_errors(v, shape.members[k], f"{where}.{k}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            errors += enum_errors(v, shape.member, f"{where}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for k, v in value.items():
            errors += enum_errors(v, shape.value, f"{where}.{k}")
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        errors.append(f"{where.lstrip('.')}: {value!r} is not one of {shape.enum}")
    return errors


def check_aws_batch():
    model = botocore.session.get_session().get_service_model("batch")
    files = {
        "deploy/aws-batch/job-definition.json": "RegisterJobDefinition",
        "deploy/aws-batch/submit-job.json": "SubmitJob",
    }
    loaded = {}
    for path, operation in files.items():
        try:
            params = json.load(open(path))
        except json.JSONDecodeError as e:
            fail(path, f"not JSON: {e}")
            continue
        shape = model.operation_model(operation).input_shape
        report = ParamValidator().validate(params, shape)
        errors = ([report.generate_report()] if report.has_errors() else []) + enum_errors(params, shape)
        if errors:
            fail(path, f"botocore {model.api_version} batch {operation}: " + "; ".join(errors))
        else:
            ok(path, f"valid input of batch {operation} (botocore's model, API {model.api_version})")
            loaded[path] = params
    if len(loaded) != 2:
        return
    jd, sj = loaded.values()
    problems = []
    codes = {
        e.get("onExitCode") for e in jd.get("retryStrategy", {}).get("evaluateOnExit", [])
        if e.get("action", "").upper() == "EXIT"
    }
    if not {"2", "3"} <= codes:
        problems.append("retryStrategy should EXIT, not retry, on exit codes 2 and 3")
    command = jd["containerProperties"]["command"]
    if "--shard" not in command or command[command.index("--shard") + 1] != "auto":
        problems.append("the command should take its shard from the array (--shard auto)")
    params = {**jd.get("parameters", {}), **sj.get("parameters", {})}
    for word in command:
        if word.startswith("Ref::") and word[5:] not in params:
            problems.append(f"{word} has no value in the job definition or the submission")
    for value in params.values():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", value):
            problems.append(f"parameter value {value!r} is not NAME=VALUE for --var")
    if sj["jobDefinition"].split(":")[0] != jd["jobDefinitionName"]:
        problems.append("submit-job.json names another job definition")
    if sj.get("arrayProperties", {}).get("size", 0) < 2:
        problems.append("an array job needs a size of at least 2")
    if problems:
        for p in problems:
            fail("deploy/aws-batch", p)
    else:
        ok("deploy/aws-batch", "no retry on exit 2 and 3; --shard auto; every Ref:: has a "
           f"NAME=VALUE; an array of {sj['arrayProperties']['size']}")
    check_spec("deploy/aws-batch/job.toml", open("deploy/aws-batch/job.toml").read())


def check_slurm():
    path = "deploy/slurm/batchscore.sbatch"
    text = open(path).read()
    array = re.search(r"^#SBATCH --array=(\d+)-(\d+)$", text, re.M)
    shards = re.search(r"^shards=\$\{SHARDS:-(\d+)\}$", text, re.M)
    if not array or not shards:
        fail(path, "no #SBATCH --array=0-N or no default SHARDS")
    elif (int(array.group(1)), int(array.group(2)) + 1) != (0, int(shards.group(1))):
        fail(path, f"--array={array.group(1)}-{array.group(2)} is not shards 0 to {shards.group(1)}")
    else:
        ok(path, f"--array=0-{array.group(2)} matches the default of {shards.group(1)} shards")


check_images()
check_k8s()
check_aws_batch()
check_slurm()
sys.exit(min(failures, 100))
