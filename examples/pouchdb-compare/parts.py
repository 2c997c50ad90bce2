"""The share of a perf profile's samples whose call stack holds each part of a request.

A sample counts in every part one of its frames matches (as perf's "children" column), so the
shares need not add up to 100 %.  Usage: python3 parts.py PERF_DATA
"""
import collections
import re
import subprocess
import sys

PARTS = [
    ("HTTP request parsing (actix-http's h1 decoder)", r"actix_http::h1::(decoder|codec).*decode|httparse"),
    ("routing (actix-router, actix-web's services)", r"actix_router::|actix_web::(app_service|scope|resource)::"),
    ("the request's span (tracing-actix-web)", r"tracing_actix_web::|tracing_subscriber::registry|tracing_core::span|tracing::span"),
    ("the request's log line (tracing-subscriber)", r"tracing_subscriber::fmt"),
    ("metrics", r"sync_server::metrics|prometheus"),
    ("the read transaction (SQLite, rusqlite, the pool)", r"^sqlite3|rusqlite::"),
    ("writing the answer (PullWriter, chunks)", r"sync_server::store::answer|sync_proto::pull::PullWriter|write_json_string"),
    ("socket writes (kernel)", r"__x64_sys_(write|sendto|writev|sendmsg)|tcp_sendmsg"),
    ("socket reads (kernel)", r"__x64_sys_(read|recvfrom|recvmsg)|tcp_recvmsg"),
    ("waking threads and waiting (futex, epoll)", r"epoll|__x64_sys_futex|futex_wake|eventfd"),
]


def main(path):
    patterns = [(name, re.compile(p)) for name, p in PARTS]
    script = subprocess.run(["perf", "script", "-i", path, "-F", "comm,ip,sym"],
                            capture_output=True, text=True, check=True).stdout
    total, hits, threads = 0, collections.Counter(), collections.Counter()
    for sample in script.split("\n\n"):
        lines = [line.strip() for line in sample.strip().split("\n") if line.strip()]
        if not lines:
            continue
        total += 1
        threads[lines[0]] += 1
        frames = [(line.split(None, 1) + [""])[1] for line in lines[1:]]
        for name, pattern in patterns:
            if any(pattern.search(frame) for frame in frames):
                hits[name] += 1
    if not total:
        sys.exit("parts.py: the profile holds no samples")
    print(f"{total} samples; threads: " + ", ".join(f"{t} {100 * n / total:.0f} %" for t, n in threads.most_common(3)))
    for name, _ in PARTS:
        print(f"  {100 * hits[name] / total:5.1f} %  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
