"""Faults injected into real runs of `secateur` (SmolLM2-135M, mpirun -np 2: DP = 2, and TP = 2 for the export):
  * rank 1 killed with SIGKILL while the ranks score (prune's calibration), while they train
    (recover) and while they write the pruned export: the job ends non-zero within 60 s, its output
    names rank 1, and nothing looks complete (no decision.json, no final export directory: at most
    a "<name>.partial");
  * a write that fails (the file-size limit, RLIMIT_FSIZE, as a full disk would) gives one clear error
    line and a non-zero exit, leaves the previous export byte for byte as it was, and no .partial.
The time from each kill to the job's exit is printed."""
import argparse, hashlib, os, resource, select, shutil, signal, subprocess, sys, time

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
LIMIT_S = 60


def rank_pid(mpirun_pid, rank):
    """The pid of a rank: a child of mpirun whose environment says OMPI_COMM_WORLD_RANK=rank."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != mpirun_pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if f"OMPI_COMM_WORLD_RANK={rank}".encode() in f.read().split(b"\0"):
                    return int(entry)
        except (OSError, IndexError, ValueError):
            continue
    return None


def kill_rank_when(cmd, ready, what, pause=None):
    """Runs cmd; once ready(output so far) holds, SIGKILLs rank 1 (and, when pause is given, SIGSTOPs it
    first, once pause(output) holds: a moment too short to hit by polling can then be waited for).
    Returns (exit code, seconds from the kill to the job's end, output), or None when the job ended
    before the moment came."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    fd = p.stdout.fileno()
    chunks, killed_at, paused, deadline = [], None, False, time.time() + 600

    def drain(wait):                                   # what is there to read within `wait` s; False at EOF
        if not select.select([fd], [], [], wait)[0]:
            return True
        data = os.read(fd, 1 << 16)
        chunks.append(data.decode(errors="replace"))
        return bool(data)
    while p.poll() is None and time.time() < deadline:
        drain(0.01)
        if pause and not paused and pause("".join(chunks)):
            pid = rank_pid(p.pid, 1)
            if pid is not None:
                os.kill(pid, signal.SIGSTOP)
                paused = True
        if killed_at is None and (paused or not pause) and ready("".join(chunks)):
            pid = rank_pid(p.pid, 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed_at = time.time()
        if killed_at is not None and time.time() - killed_at > LIMIT_S + 30:
            break
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    ended_at = time.time()
    while select.select([fd], [], [], 1)[0] and drain(0):
        pass
    out = "".join(chunks)
    if killed_at is None:
        print(f"FAIL {what}: the job ended (exit {p.returncode}) before rank 1 could be killed\n{out[-2000:]}")
        return None
    return p.returncode, ended_at - killed_at, out


def check_kill(what, result, incomplete):
    if result is None:
        return False
    rc, secs, out = result
    names = "rank 1" in out
    good = rc != 0 and secs < LIMIT_S and names and incomplete()
    print(f"{'OK  ' if good else 'FAIL'} {what}: rank 1 killed, the job exited {rc} after {secs:.1f} s "
          f"(limit {LIMIT_S} s), names rank 1: {names}, nothing looks complete: {incomplete()}")
    if not good:
        print(out[-3000:])
    return good


def sha(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            h.update(f.encode())
            h.update(open(os.path.join(root, f), "rb").read())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True, help="SmolLM2's HF directory")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    os.makedirs(a.tmp)
    mpirun = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2", a.secateur, "run"]
    ok = True

    # 1. during prune's scoring: two seconds into the stage, long before its 64 windows are done
    run = os.path.join(a.tmp, "score")
    stage_at = {}

    def scoring(out):
        if "stage prune" in out and "t" not in stage_at:
            stage_at["t"] = time.time()
        return "t" in stage_at and time.time() - stage_at["t"] > 2
    r = kill_rank_when(mpirun + ["run.stages=[prune]", f"model.path={a.model}", f"run.dir={run}",
                                 "calibration.samples=64"], scoring, "prune scoring")
    ok &= check_kill("during prune scoring", r, lambda: not os.path.exists(os.path.join(run, "decision.json"))
                     and not os.path.exists(os.path.join(run, "pruned")) and "pruned with" not in r[2])

    # 2. during recovery: after the second training step
    run = os.path.join(a.tmp, "recover")
    r = kill_rank_when(mpirun + ["run.stages=[recover]", f"model.path={a.model}", f"run.dir={run}", "recover.steps=20",
                                 "recover.batch=2", "recover.micro_batch=1", "recover.seq_len=64"],
                       lambda out: "step 2/20" in out, "recovery")
    ok &= check_kill("during recovery", r, lambda: not os.path.exists(os.path.join(run, "recovered")))

    # 3. during the export write, on TP = 2 where both ranks write their shards into one export: rank 1
    #    stopped once the decision is written (the export comes next), killed once rank 0 has begun the
    #    export (its .partial directory is there), before rank 1 wrote its shards
    run = os.path.join(a.tmp, "export")
    partial = os.path.join(run, "pruned.partial")
    r = kill_rank_when(mpirun + ["run.stages=[prune]", f"model.path={a.model}", f"run.dir={run}",
                                 "calibration.samples=2", "parallel.tp=2"], lambda out: os.path.exists(partial), "export write",
                       pause=lambda out: os.path.exists(os.path.join(run, "decision.json")))
    ok &= check_kill("during the export write", r, lambda: not os.path.exists(os.path.join(run, "pruned")))

    # 4. a write that fails: an export exists, the next one hits the file-size limit
    out_dir = os.path.join(a.tmp, "converted")
    convert = [a.secateur, "convert", "--in", a.model, "--out", out_dir, "run.dir=" + os.path.join(a.tmp, "convert-run")]
    subprocess.run(convert, check=True, env=ENV, capture_output=True)
    before = sha(out_dir)
    limit = 64 << 20                                   # the weights are 4x that in float32

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    r = subprocess.run(convert, env=ENV, capture_output=True, text=True, preexec_fn=small_files)
    errors = [l for l in r.stderr.splitlines() if "error" in l.lower()]
    intact = sha(out_dir) == before
    no_partial = not os.path.exists(out_dir + ".partial")
    good = r.returncode not in (0,) and r.returncode > 0 and len(errors) == 1 and "File too large" in errors[0] \
        and intact and no_partial
    print(f"{'OK  ' if good else 'FAIL'} a write past the file-size limit: exit {r.returncode}, "
          f"{len(errors)} error line(s): {errors[0] if errors else r.stderr[-500:]!r}; the previous export intact: "
          f"{intact}; no .partial left: {no_partial}")
    ok &= good
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
