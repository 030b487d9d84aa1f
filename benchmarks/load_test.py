"""Load test of `divqat serve` on loopback: throughput, latency, and the budget's books after.

    python benchmarks/load_test.py --victim /work/scratch/serve-victim

Starts `divqat serve VICTIM --port 0` as a subprocess with a fresh key database in a temporary
directory (127.0.0.1 only), then for each batch size (1 and 64) runs `--clients` concurrent
clients (threads, one keep-alive httpx client and one key each), each sending `--requests`
requests of the same batch in the binary form, and stops a phase early at `--max-seconds`.
Reported: requests/s, images/s, p50/p99 latency, and served images/s as a ratio of in-process
onnxruntime images/s at the same batch (the same file, one session with a thread per core,
sequential calls: the best in-process figure), and how many cores the server and the clients
kept busy (they share the machine).
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
from divqat.wire import encode_images

RACE_BUDGET, RACE_BATCH = 100, 7


def start_server(victim: Path, workdir: Path, keys: list[dict], threads: int, prada: bool) -> tuple:
    (workdir / "keys.yaml").write_text("".join(f"- {json.dumps(k)}\n" for k in keys))  # JSON is YAML
    divqat = str(Path(sys.executable).with_name("divqat"))
    args = [divqat, "serve", str(victim), "--host", "127.0.0.1", "--port", "0", "--db", str(workdir / "keys.db")]
    args += ["--keys", str(workdir / "keys.yaml"), "--no-access-log", "--threads", str(threads)]
    args += ["--prada"] if prada else []
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if match := re.search(r"http://127\.0\.0\.1:\d+", line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain: never block the server
            return proc, match[0]
        print(line, end="", file=sys.stderr)
    raise SystemExit("the server did not start")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of the server process (Linux /proc), or of this client process."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(url: str, keys: list[str], body: bytes, requests: int, max_seconds: float, server_pid: int) -> dict:
    """Each key's client sends `requests` requests (or until the deadline); returns what came back,
    and how many cores the server and the clients kept busy meanwhile (they share the machine)."""
    latencies, statuses, rows = [], [], []
    lock = threading.Lock()
    barrier = threading.Barrier(len(keys) + 1)
    deadline = [0.0]

    def client(key: str):
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            barrier.wait()
            for _ in range(requests):
                if time.monotonic() > deadline[0]:
                    break
                start = time.perf_counter()
                r = c.post("/v1/predict", content=body)
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
    start, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(server_pid), cpu_seconds()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    server_cores = (cpu_seconds(server_pid) - server_cpu) / wall
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
        return con.execute("SELECT substr(key_hash, 1, 12), budget, used FROM keys").fetchall()
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victim", type=Path, required=True, help="a run directory (its model.onnx is served)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200, help="requests per client per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit of each phase")
    parser.add_argument(
        "--threads", type=int, default=1, help="onnxruntime threads of the server (divqat serve's default: 1)"
    )
    parser.add_argument("--prada", action="store_true", help="serve with PRADA detection on every key")
    args = parser.parse_args()
    model = load_served_model(args.victim, args.threads)
    rng = np.random.default_rng(0)

    keys = [{"key": "warm-up-key-0", "budget": 10_000}]
    keys += [
        {"key": f"client-b{b}-{i:02d}", "budget": args.requests * b} for b in args.batches for i in range(args.clients)
    ]
    keys += [{"key": "race-key-0001-0123456789abcdef012", "budget": RACE_BUDGET}]
    results, failures = {}, []
    with tempfile.TemporaryDirectory(prefix="divqat-load-") as tmp:
        workdir = Path(tmp)
        proc, url = start_server(args.victim, workdir, keys, args.threads, args.prada)
        try:
            warm = encode_images(rng.random((8, *model.input_shape), dtype=np.float32))
            warm_up = run_phase(url, ["warm-up-key-0"], warm, 20, args.max_seconds, proc.pid)
            for b in args.batches:
                images = rng.random((b, *model.input_shape), dtype=np.float32)
                clients = [f"client-b{b}-{i:02d}" for i in range(args.clients)]
                results[b] = run_phase(url, clients, encode_images(images), args.requests, args.max_seconds, proc.pid)
                # Against the best in-process figure: one session with a thread per core (threads 0).
                results[b]["in_process_images_per_s"] = in_process_images_per_s(args.victim, images, 0)
            race_body = encode_images(rng.random((RACE_BATCH, *model.input_shape), dtype=np.float32))
            race = run_phase(url, ["race-key-0001-0123456789abcdef012"] * args.clients, race_body, 20, args.max_seconds, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        books = read_books(workdir / "keys.db")

    phases = [warm_up, *results.values(), race]
    answered = sum(r["rows"] for r in phases)
    counted = sum(used for _, _, used in books)
    if counted != answered:
        failures.append(f"counted {counted} queries, answered {answered} rows")
    over = [(key, budget, used) for key, budget, used in books if used > budget]
    if over:
        failures.append(f"keys above their budget: {over}")
    statuses = {s for r in phases for s in r["statuses"]}
    if any(s >= 500 for s in statuses):
        failures.append(f"5xx answers: {statuses}")
    if race["rows"] > RACE_BUDGET or race["rows"] != RACE_BUDGET // RACE_BATCH * RACE_BATCH:
        failures.append(f"race: {race['rows']} rows answered from a budget of {RACE_BUDGET}")

    prada = ", PRADA on" if args.prada else ""
    print(f"{args.clients} clients, {args.requests} requests each per batch size, binary form, loopback{prada}")
    print(
        "| batch | requests | requests/s | images/s | p50 ms | p99 ms | in-process images/s | served / in-process "
        "| server / client cores busy |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for b, r in results.items():
        ratio = r["images_per_s"] / r["in_process_images_per_s"]
        print(
            f"| {b} | {r['ok']} of {r['requests']} | {r['requests_per_s']:.0f} | {r['images_per_s']:.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['in_process_images_per_s']:.0f} | {ratio:.2f} | "
            f"{r['server_cores']:.2f} / {r['client_cores']:.2f} |"
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
