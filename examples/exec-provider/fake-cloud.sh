#!/bin/sh
# fake-cloud.sh: a pretend cloud for Colony's exec provider. It launches
# nothing: it keeps "instances" as records in a JSON file, which is enough
# to test the protocol, idempotency and failure handling. Colony's tests
# (scaling/provider) run it; schema: scaling/provider/EXEC.md.
#
# Usage: fake-cloud.sh types|launch|terminate|list   (JSON request on stdin)
#
# Environment:
#   FAKE_CLOUD_STATE     path of the JSON state file (required; created on first use)
#   FAKE_CLOUD_TYPES     JSON array of instance types (default: small, large, gpu)
#   FAKE_CLOUD_CAPACITY  most live instances the cloud holds (exit 69 beyond)
#   FAKE_CLOUD_FAIL      fail the first N calls with exit 75 (transient)
#   FAKE_CLOUD_FAIL_ONLY only count and fail this subcommand
#   FAKE_CLOUD_HANG      subcommand that never answers (tests timeouts)
#   FAKE_CLOUD_HANG_AFTER_LAUNCH=1  launch creates the instances, then never
#                        answers (a leader that died mid-launch)
#
# Needs jq and flock.
set -eu

state=${FAKE_CLOUD_STATE:?fake-cloud: set FAKE_CLOUD_STATE to a JSON file path}
cmd=${1:-}
case $cmd in
types | launch | terminate | list) ;;
*)
	echo "usage: fake-cloud.sh types|launch|terminate|list < request.json" >&2
	exit 64
	;;
esac
for tool in jq flock; do
	command -v "$tool" >/dev/null || {
		echo "fake-cloud: $tool is required" >&2
		exit 1
	}
done
req=$(cat)

# Everything below, the failure counter included, runs under one lock:
# concurrent calls see a consistent cloud, like a real API.
exec 9>>"$state.lock"
flock 9

if [ -n "${FAKE_CLOUD_FAIL:-}" ] && { [ -z "${FAKE_CLOUD_FAIL_ONLY:-}" ] || [ "$FAKE_CLOUD_FAIL_ONLY" = "$cmd" ]; }; then
	n=$(cat "$state.failures" 2>/dev/null || echo 0)
	if [ "$n" -lt "$FAKE_CLOUD_FAIL" ]; then
		echo $((n + 1)) >"$state.failures"
		echo "fake-cloud: injected transient failure $((n + 1)) of $FAKE_CLOUD_FAIL ($cmd)" >&2
		exit 75
	fi
fi
if [ "${FAKE_CLOUD_HANG:-}" = "$cmd" ]; then
	exec 9>&- # release the lock: only this call hangs
	echo "fake-cloud: hanging on $cmd as asked" >&2
	exec sleep 3600
fi

[ -s "$state" ] || echo '{"seq": 0, "instances": []}' >"$state"

types=${FAKE_CLOUD_TYPES:-'[
  {"name": "small", "profile": {"cpus": 2, "memory_mib": 4096, "arch": "amd64", "os": "linux"}, "cost_per_hour": 0.05},
  {"name": "large", "profile": {"cpus": 8, "memory_mib": 32768, "arch": "amd64", "os": "linux"}, "cost_per_hour": 0.40},
  {"name": "gpu", "profile": {"cpus": 8, "memory_mib": 65536, "arch": "amd64", "os": "linux", "labels": {"gpu": "true"}}, "cost_per_hour": 2.50, "reserved": ["gpu"]}
]'}

save() { # jq filter [args...]: rewrite the state file atomically
	filter=$1
	shift
	jq "$@" "$filter" "$state" >"$state.tmp"
	mv "$state.tmp" "$state"
}

case $cmd in
types)
	jq -n --argjson t "$types" '{types: $t}'
	;;
list)
	# Instances boot between two looks at the cloud.
	save '.instances |= map(if .state == "pending" then .state = "running" else . end)'
	jq '{instances: .instances}' "$state"
	;;
launch)
	type=$(printf '%s' "$req" | jq -r '.type')
	printf '%s' "$types" | jq -e --arg t "$type" 'any(.[]; .name == $t)' >/dev/null || {
		echo "fake-cloud: unknown instance type \"$type\"" >&2
		exit 65
	}
	if [ -n "${FAKE_CLOUD_CAPACITY:-}" ]; then
		live=$(jq '[.instances[] | select(.state != "terminated")] | length' "$state")
		want=$(printf '%s' "$req" | jq '.indexes | length')
		if [ $((live + want)) -gt "$FAKE_CLOUD_CAPACITY" ]; then
			echo "fake-cloud: capacity $FAKE_CLOUD_CAPACITY reached ($live live, $want asked)" >&2
			exit 69
		fi
	fi
	now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	# Like EC2's ClientToken: a slot (key, index) that exists is not made again.
	save '
	  ($req.indexes - [.instances[] | select(.idempotency_key == $req.idempotency_key) | .index]) as $new
	  | .seq as $seq
	  | .instances += [$new | to_entries[] | {
	      id: ("fake-" + (($seq + .key + 1) | tostring)),
	      type: $req.type,
	      idempotency_key: $req.idempotency_key,
	      index: .value,
	      state: "pending",
	      labels: ($req.labels // {}),
	      addr: ("10.0.0." + ((($seq + .key + 1) % 250) | tostring) + ":7946"),
	      created_at: $now}]
	  | .seq += ($new | length)' --argjson req "$req" --arg now "$now"
	if [ -n "${FAKE_CLOUD_HANG_AFTER_LAUNCH:-}" ]; then
		exec 9>&-
		echo "fake-cloud: launched, now hanging as asked" >&2
		exec sleep 3600
	fi
	jq --argjson req "$req" '{instances: [.instances[]
	    | select(.idempotency_key == $req.idempotency_key)
	    | select(.index as $i | any($req.indexes[]; . == $i))]}' "$state"
	;;
terminate)
	save '.instances |= map(if (.id as $id | any($req.ids[]; . == $id)) then .state = "terminated" else . end)' --argjson req "$req"
	jq --argjson req "$req" '{terminated: [.instances[] | select(.id as $id | any($req.ids[]; . == $id)) | .id]}' "$state"
	;;
esac
