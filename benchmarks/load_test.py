"""Load test of `divqat serve` on loopback: throughput, latency, and the budget's books after.

    python benchmarks/load_test.py --victim runs/v [--workers 2] [--prada]

Starts `divqat serve VICTIM --port 0` as a subprocess with a fresh key database in a temporary
directory (127.0.0.1 only), then for each batch size (1 and 64) runs `--clients` concurrent
clients (threads, one keep-alive httpx client and one key each), each sending `--requests`
requests of the same batch in the binary form, and stops a phase early at `--max-seconds`.
Reported: requests/s, images/s, p50/p99 latency, and served images/s as a ratio of in-process
onnxruntime images/s at the same batch (the same file, one session with a thread per core,
sequential calls: the best in-process figure), and how many cores the server and the clients
kept busy (they share the machine).
Then the neighbour phase: one key streams batches of 64 random images as fast as it can
while another sends single images, whose latency is reported (PRADA's cost on other keys).
A last phase races all clients on one key with a budget of 100 (batches of 7).

Then the server is stopped and its database read: the sum of counted queries must equal the
rows answered with 200, no key may be above its budget, and no answer may be a 5xx; the
script exits 1 if any check fails. Everything is bounded: at most clients x requests requests
per phase, each phase at most --max-seconds, and the server is killed on the way out.
"""

import argparse
import json
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from divqat.serve.model import load_served_model
from divqat.wire import encode_images, encode_raw

RACE_BUDGET, RACE_BATCH = 100, 7


def start_server(victim: Path, workdir: Path, keys: list[dict], args) -> tuple:
    (workdir / "keys.yaml").write_text("".join(f"- {json.dumps(k)}\n" for k in keys))  # JSON is YAML
    divqat = str(Path(sys.executable).with_name("divqat"))
    args_ = [divqat, "serve", str(victim), "--host", "127.0.0.1", "--port", "0", "--db", str(workdir / "keys.db")]
    args_ += ["--keys", str(workdir / "keys.yaml"), "--no-access-log", "--workers", str(args.workers)]
    args_ += ["--rate-requests", "0", "--rate-images", "0"]  # the clients are the load: no per-key limit
    args_ += ["--threads", str(args.threads)] if args.threads is not None else []
    args_ += ["--prada"] if args.prada else []
    args = args_
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if match := re.search(r"http://127\.0\.0\.1:\d+", line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain: never block the server
            return proc, match[0]
        print(line, end="", file=sys.stderr)
    raise SystemExit("the server did not start")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of the server and its worker processes (Linux /proc), or of
    this client process."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    total = 0.0
    for proc in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        for child in map(int, text):
            found += [child, *children(child)]
    return found


def run_phase(
    url: str,
    keys: list[str],
    body: tuple[bytes, dict],
    requests: int,
    max_seconds: float,
    server_pid: int | None,
    stop: threading.Event | None = None,
) -> dict:
    """Each key's client sends `requests` requests (or until the deadline); returns what came back,
    and how many cores the server and the clients kept busy meanwhile (they share the machine)."""
    latencies, statuses, rows = [], [], []
    lock = threading.Lock()
    barrier = threading.Barrier(len(keys) + 1)
    deadline = [0.0]

    def client(key: str):
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            barrier.wait()
            for _ in range(requests):
                if time.monotonic() > deadline[0] or (stop is not None and stop.is_set()):
                    break
                start = time.perf_counter()
                r = c.post("/v1/predict", content=body[0], headers=body[1])
                took = time.perf_counter() - start
                answered = len(r.json()["probabilities"]) if r.status_code == 200 else 0
                with lock:
                    latencies.append(took) if r.status_code == 200 else None
                    statuses.append(r.status_code)
                    rows.append(answered)

    threads = [threading.Thread(target=client, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + max_seconds
    barrier.wait()
    start, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(server_pid) if server_pid else 0, cpu_seconds()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    server_cores = (cpu_seconds(server_pid) - server_cpu) / wall if server_pid else float("nan")
    client_cores = (cpu_seconds() - client_cpu) / wall
    ok = statuses.count(200)
    return {
        "wall_s": wall,
        "requests": len(statuses),
        "ok": ok,
        "rows": sum(rows),
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        "requests_per_s": ok / wall,
        "images_per_s": sum(rows) / wall,
        "p50_ms": 1e3 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)) if latencies else float("nan"),
        "server_cores": server_cores,
        "client_cores": client_cores,
    }


WRK_SCRIPT = r"""
local f = io.open(os.getenv("WRK_BODY"), "rb"); local body = f:read("*all"); f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRK_KEY")
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["X-Images-Shape"] = os.getenv("WRK_SHAPE")
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %f %f\n", summary.requests, summary.errors.status, summary.duration,
                         latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_phase(url: str, key: str, images: np.ndarray, connections: int, seconds: float, server_pid: int) -> dict:
    """The same phase driven by wrk (C, one thread): a load generator that leaves the cores to
    the server. One key, raw form, `connections` keep-alive connections for `seconds`."""
    with tempfile.TemporaryDirectory(prefix="divqat-wrk-") as tmp:
        body, headers = encode_raw(images)
        (Path(tmp) / "body").write_bytes(body)
        (Path(tmp) / "post.lua").write_text(WRK_SCRIPT)
        env = {
            **os.environ,
            "WRK_BODY": str(Path(tmp) / "body"),
            "WRK_KEY": key,
            "WRK_SHAPE": headers["X-Images-Shape"],
        }
        args = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s", "-s",
                str(Path(tmp) / "post.lua"), f"{url}/v1/predict"]  # fmt: skip
        before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu, start = cpu_seconds(server_pid), time.perf_counter()
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=seconds + 60).stdout
        wall = time.perf_counter() - start
        server_cores = (cpu_seconds(server_pid) - server_cpu) / wall
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    requests, non2xx, duration_us, p50_us, p99_us = line.split()[1:]
    ok = int(requests) - int(non2xx)
    duration = int(duration_us) / 1e6
    client = (after_children.ru_utime + after_children.ru_stime) - (before_children.ru_utime + before_children.ru_stime)
    return {
        "requests": int(requests), "ok": ok, "rows": ok * len(images), "statuses": {"non-2xx": int(non2xx)},
        "requests_per_s": ok / duration, "images_per_s": ok * len(images) / duration,
        "p50_ms": float(p50_us) / 1000, "p99_ms": float(p99_us) / 1000,
        "server_cores": server_cores, "client_cores": client / wall,
    }  # fmt: skip


def key_name(name: str) -> str:
    return f"load-{name}-".ljust(32, "0")  # keys are at least 32 characters


def neighbour_phase(url: str, thief_body: tuple, user_body: tuple, max_seconds: float) -> tuple[dict, dict]:
    """A thief key streams large batches while a neighbour key sends 200 single images."""
    stop = threading.Event()
    results = {}

    def thief():
        results["thief"] = run_phase(url, [key_name("thief")], thief_body, 10**6, max_seconds, None, stop)

    streaming = threading.Thread(target=thief)
    streaming.start()
    time.sleep(1.0)  # the thief's state is warm before the neighbour starts
    results["user"] = run_phase(url, [key_name("neighbour")], user_body, 200, max_seconds, None)
    stop.set()
    streaming.join()
    return results["thief"], results["user"]


def in_process_images_per_s(victim: Path, images: np.ndarray, threads: int, seconds: float = 3.0) -> float:
    model = load_served_model(victim, threads)
    model.predict_proba(images)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict_proba(images)
        n += len(images)
    return n / (time.perf_counter() - start)


def read_books(db: Path) -> list[tuple[str, int, int]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT public_id, budget, used FROM keys ORDER BY id").fetchall()
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victim", type=Path, required=True, help="a run directory (its model.onnx is served)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200, help="requests per client per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit of each phase")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads per request [serve's default]")
    parser.add_argument("--workers", type=int, default=1, help="divqat serve --workers")
    parser.add_argument("--form", choices=["raw", "b64"], default="raw", help="the request body's form")
    parser.add_argument("--wrk", action="store_true", help="also drive each batch size with wrk (Debian's wrk)")
    parser.add_argument("--wrk-seconds", type=float, default=15.0)
    parser.add_argument("--prada", action="store_true", help="serve with PRADA detection on every key")
    args = parser.parse_args()
    model = load_served_model(args.victim, 1)

    def encode(images: np.ndarray) -> tuple[bytes, dict]:
        if args.form == "raw":
            return encode_raw(images)
        return encode_images(images), {"Content-Type": "application/json"}

    rng = np.random.default_rng(0)

    keys = [{"key": key_name("warm-up"), "budget": 10_000}]
    keys += [
        {"key": key_name(f"b{b}-{i:02d}"), "budget": args.requests * b}
        for b in args.batches
        for i in range(args.clients)
    ]
    keys += [{"key": key_name("thief"), "budget": 10**9}, {"key": key_name("neighbour"), "budget": 10**6}]
    keys += [{"key": key_name(f"wrk-{b}"), "budget": 10**9} for b in args.batches]
    keys += [{"key": key_name("race"), "budget": RACE_BUDGET}]
    results, failures = {}, []
    with tempfile.TemporaryDirectory(prefix="divqat-load-") as tmp:
        workdir = Path(tmp)
        proc, url = start_server(args.victim, workdir, keys, args)
        try:
            warm = encode(rng.random((8, *model.input_shape), dtype=np.float32))
            warm_up = run_phase(url, [key_name("warm-up")], warm, 20, args.max_seconds, proc.pid)
            for b in args.batches:
                images = rng.random((b, *model.input_shape), dtype=np.float32)
                clients = [key_name(f"b{b}-{i:02d}") for i in range(args.clients)]
                results[b] = run_phase(url, clients, encode(images), args.requests, args.max_seconds, proc.pid)
                # Against the best in-process figure: one session with a thread per core (threads 0).
                results[b]["in_process_images_per_s"] = in_process_images_per_s(args.victim, images, 0)
            wrk = {}
            if args.wrk:
                for b in args.batches:
                    images = rng.random((b, *model.input_shape), dtype=np.float32)
                    wrk[b] = wrk_phase(url, key_name(f"wrk-{b}"), images, args.clients, args.wrk_seconds, proc.pid)
                    wrk[b]["in_process_images_per_s"] = results[b]["in_process_images_per_s"]
            thief_body = encode(rng.random((64, *model.input_shape), dtype=np.float32))
            user_body = encode(rng.random((1, *model.input_shape), dtype=np.float32))
            neighbour = neighbour_phase(url, thief_body, user_body, args.max_seconds)
            race_body = encode(rng.random((RACE_BATCH, *model.input_shape), dtype=np.float32))
            race = run_phase(url, [key_name("race")] * args.clients, race_body, 20, args.max_seconds, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        books = read_books(workdir / "keys.db")

    phases = [warm_up, *results.values(), *neighbour, race]
    answered = sum(r["rows"] for r in phases)
    used_by = {k["key"]: used for k, (_, _, used) in zip(keys, books, strict=True)}  # rows in the file's order
    wrk_keys = {key_name(f"wrk-{b}"): b for b in wrk}
    counted = sum(used for key, used in used_by.items() if key not in wrk_keys)
    if counted != answered:
        failures.append(f"counted {counted} queries, answered {answered} rows")
    for key, b in wrk_keys.items():  # wrk stops mid-flight: at most one batch per connection counted, not recorded
        if not wrk[b]["rows"] <= used_by[key] <= wrk[b]["rows"] + args.clients * b:
            failures.append(f"wrk at batch {b}: counted {used_by[key]}, recorded {wrk[b]['rows']}")
        if wrk[b]["statuses"]["non-2xx"]:
            failures.append(f"wrk at batch {b}: {wrk[b]['statuses']['non-2xx']} answers were not 200")
    over = [(key, budget, used) for key, budget, used in books if used > budget]
    if over:
        failures.append(f"keys above their budget: {over}")
    statuses = {s for r in phases for s in r["statuses"]}
    if any(s >= 500 for s in statuses):
        failures.append(f"5xx answers: {statuses}")
    if race["rows"] > RACE_BUDGET or race["rows"] != RACE_BUDGET // RACE_BATCH * RACE_BATCH:
        failures.append(f"race: {race['rows']} rows answered from a budget of {RACE_BUDGET}")

    prada = ", PRADA on" if args.prada else ""
    print(f"divqat serve --workers {args.workers}{f' --threads {args.threads}' if args.threads else ''}: ", end="")
    print(f"{args.clients} clients, {args.requests} requests each per batch size, binary form, loopback{prada}")
    print(
        "| batch | clients | requests | requests/s | images/s | p50 ms | p99 ms | in-process images/s "
        "| served / in-process | server / client cores busy |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for driver, table in (("httpx", results), ("wrk", wrk)):
        for b, r in table.items():
            ratio = r["images_per_s"] / r["in_process_images_per_s"]
            print(
                f"| {b} | {driver} | {r['ok']} of {r['requests']} | {r['requests_per_s']:.0f} "
                f"| {r['images_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['in_process_images_per_s']:.0f} | {ratio:.2f} "
                f"| {r['server_cores']:.2f} / {r['client_cores']:.2f} |"
            )
    thief, user = neighbour
    print(
        f"neighbour: while one key streamed batches of 64 ({thief['images_per_s']:.0f} images/s), another key's "
        f"single images took p50 {user['p50_ms']:.1f} ms, p99 {user['p99_ms']:.1f} ms ({user['ok']} requests)"
    )
    print(
        f"race: {args.clients} clients x 20 requests of {RACE_BATCH} on one key with budget {RACE_BUDGET}: "
        f"{race['rows']} rows answered, statuses {race['statuses']}"
    )
    print(f"books: {counted} queries counted, {answered} rows answered with 200; keys over budget: {len(over)}")
    print(f"statuses seen: {sorted(statuses)}")
    print("checks: " + ("all passed" if not failures else "FAILED: " + "; ".join(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
