# Sourced by the proxy benchmarks (proxy/bench/wrk.sh, scripts/bench-serving.sh):
# runs wrk over interleaved repetitions and prints medians with ratios to
# HAProxy measured in the same run.
#
# The caller sets: ORDER (targets, in order; one must be `haproxy`), and the
# associative arrays URL[target] (host:port), HOST[target] (Host header) and
# CPU_PIDS[target] (PIDs whose CPU time counts as the proxy's, may be
# empty); REPS, DURATION and WORK (a scratch directory).

# CPU ticks (user+system) of processes, from /proc.
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }

# run_reps: one wrk run per target per repetition, interleaved.
run_reps() {
  RESULTS="$WORK/results.tsv"
  : > "$RESULTS"
  echo "wrk -t2 -c64 -d$DURATION --latency; $REPS interleaved repetitions" >&2
  for rep in $(seq 1 "$REPS"); do
    for t in "${ORDER[@]}"; do
      before=0; [ -n "${CPU_PIDS[$t]}" ] && before=$(ticks ${CPU_PIDS[$t]})
      out=$(wrk -t2 -c64 -d"$DURATION" --latency -H "Host: ${HOST[$t]}" "http://${URL[$t]}/")
      after=0; [ -n "${CPU_PIDS[$t]}" ] && after=$(ticks ${CPU_PIDS[$t]})
      rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      p99=$(awk '$1=="99%" {print $2}' <<<"$out")
      errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rep" "$rps" "$p99" "$(( after - before ))" "$reqs" >> "$RESULTS"
      echo "rep $rep $t: $rps req/s p99 $p99 $errs" >&2
    done
  done
}

# summarize: medians per target; req/s and p99 as ratios to HAProxy; proxy
# CPU per request.
summarize() {
  python3 - "$RESULTS" "$(getconf CLK_TCK)" "${ORDER[@]}" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
hz = int(sys.argv[2])
order = sys.argv[3:]
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
by = {}
for t, rep, rps, p99, ticks, reqs in rows:
    by.setdefault(t, []).append((float(rps), ms(p99), int(ticks) / hz, int(reqs)))
med = {t: (statistics.median(r for r, *_ in v), statistics.median(p for _, p, *_ in v),
           statistics.median(c / n * 1e6 for _, _, c, n in v)) for t, v in by.items()}
hap = med["haproxy"]
print(f"{'target':<16} {'req/s':>9} {'vs HAProxy':>10} {'p99 ms':>7} {'p99 vs HAProxy':>14} {'proxy CPU/req':>14}")
for t in order:
    rps, p99, cpu = med[t]
    cpu_s = "-" if cpu == 0 else f"{cpu:.1f} us"
    print(f"{t:<16} {rps:>9.0f} {rps / hap[0]:>9.2f}x {p99:>7.2f} {p99 / hap[1]:>13.2f}x {cpu_s:>14}")
PY
}
