#!/bin/sh
# aws-ec2.sh: a Colony exec provider for Amazon EC2, built on the AWS CLI
# (v1 or v2) and jq. Protocol: scaling/provider/EXEC.md. This script is an
# example to adapt; it is NOT run by Colony's tests (there is no cloud
# there): fake-cloud.sh is the tested one.
#
# Usage: aws-ec2.sh types|launch|terminate|list   (JSON request on stdin)
#
# Environment (set it in the pool's exec provider `env:`):
#   AWS_REGION / AWS_PROFILE   as for any AWS CLI call
#   EC2_AMI                    AMI with colony installed at /usr/local/bin/colony (required to launch)
#   EC2_SUBNET                 subnet ID the instances go in (required to launch)
#   EC2_SECURITY_GROUPS        space-separated security group IDs (gossip 7946 tcp+udp, API 7070 tcp)
#   EC2_KEY_NAME               optional SSH key pair name
#   EC2_INSTANCE_PROFILE       optional IAM instance profile name
#   COLONY_POOL                tag value that scopes this provider's instances (default: colony)
#   EC2_TYPES_JSON             optional JSON array replacing the instance types below
#   COLONY_AGENT_ARGS          optional extra `colony agent` flags, e.g. "--encrypt KEY"
#
# Exactly once: every instance is tagged colony:pool, colony:key, colony:index;
# each slot is launched with ClientToken "<key>-<index>", so EC2 itself returns
# the existing instance when a launch is repeated (a leader that died while
# run-instances was in flight). Colony lists before launching and asks only
# for missing slots.
#
# Exit codes (sysexits): 75 transient (throttling, API unavailable),
# 69 no capacity or quota, 65 unknown instance type, anything else permanent.
set -eu

POOL=${COLONY_POOL:-colony}
cmd=${1:-}
case $cmd in
types | launch | terminate | list) ;;
*)
	echo "usage: aws-ec2.sh types|launch|terminate|list < request.json" >&2
	exit 64
	;;
esac
for tool in aws jq; do
	command -v "$tool" >/dev/null || {
		echo "aws-ec2: $tool is required" >&2
		exit 1
	}
done
req=$(cat)

# Profiles are what the agent on each type will gossip. Costs: on-demand
# USD per hour (us-east-1); adjust to your region and contract.
TYPES=${EC2_TYPES_JSON:-'[
  {"name": "t3.medium",   "profile": {"cpus": 2, "memory_mib": 4096,  "arch": "amd64", "os": "linux"}, "cost_per_hour": 0.0416},
  {"name": "m7i.large",   "profile": {"cpus": 2, "memory_mib": 8192,  "arch": "amd64", "os": "linux"}, "cost_per_hour": 0.1008},
  {"name": "m7g.large",   "profile": {"cpus": 2, "memory_mib": 8192,  "arch": "arm64", "os": "linux"}, "cost_per_hour": 0.0816},
  {"name": "c7i.2xlarge", "profile": {"cpus": 8, "memory_mib": 16384, "arch": "amd64", "os": "linux"}, "cost_per_hour": 0.357},
  {"name": "g6.xlarge",   "profile": {"cpus": 4, "memory_mib": 16384, "arch": "amd64", "os": "linux",
                           "labels": {"gpu": "true", "gpu.model": "l4"}}, "cost_per_hour": 0.8048, "reserved": ["gpu"]}
]'}

# ec2 ARGS...: run an EC2 call, mapping AWS error codes to exit codes.
ec2() {
	errf=$(mktemp)
	if aws ec2 "$@" --output json 2>"$errf"; then
		rm -f "$errf"
		return 0
	fi
	err=$(cat "$errf")
	rm -f "$errf"
	echo "aws-ec2: aws ec2 $1: $err" >&2
	case $err in
	*RequestLimitExceeded* | *Throttling* | *ServiceUnavailable* | *InternalError* | *Unavailable* | *"Could not connect"* | *"timed out"* | *"Connection was closed"*) exit 75 ;;
	*InsufficientInstanceCapacity* | *InstanceLimitExceeded* | *VcpuLimitExceeded* | *MaxSpotInstanceCountExceeded*) exit 69 ;;
	esac
	exit 1
}

# Instances (EC2's JSON on stdin) to Colony's instance objects.
TO_COLONY='[.Reservations[]?.Instances[]?, .Instances[]?
  | (reduce (.Tags // [])[] as $t ({}; .[$t.Key] = $t.Value)) as $tags
  | select($tags["colony:pool"] == $pool)
  | {id: .InstanceId,
     type: .InstanceType,
     idempotency_key: $tags["colony:key"],
     index: ($tags["colony:index"] | tonumber),
     state: ({"pending": "pending", "running": "running"}[.State.Name] // "terminated"),
     labels: ($tags["colony:labels"] // "{}" | fromjson),
     addr: (if .PrivateIpAddress then .PrivateIpAddress + ":7946" else "" end),
     created_at: (.LaunchTime | sub("\\.[0-9]+"; "") | sub("\\+00:00$"; "Z"))}]'

case $cmd in
types)
	jq -n --argjson t "$TYPES" '{types: $t}'
	;;

list)
	# Capture first: in a pipeline the shell would lose ec2's exit code.
	desc=$(ec2 describe-instances --filters "Name=tag:colony:pool,Values=$POOL")
	printf '%s' "$desc" | jq --arg pool "$POOL" "{instances: $TO_COLONY}"
	;;

launch)
	: "${EC2_AMI:?aws-ec2: set EC2_AMI}" "${EC2_SUBNET:?aws-ec2: set EC2_SUBNET}"
	key=$(printf '%s' "$req" | jq -r .idempotency_key)
	type=$(printf '%s' "$req" | jq -r .type)
	join=$(printf '%s' "$req" | jq -r '.join_addr // ""')
	labels=$(printf '%s' "$req" | jq -c '.labels // {}')
	printf '%s' "$TYPES" | jq -e --arg t "$type" 'any(.[]; .name == $t)' >/dev/null || {
		echo "aws-ec2: unknown instance type \"$type\"" >&2
		exit 65
	}
	# The agent's flags, shell-quoted by jq (@sh) for the user-data script.
	agent_flags=$(printf '%s' "$req" | jq -r '
	  ([if .join_addr != "" and .join_addr != null then "--retry-join", .join_addr, "--retry-max", "0" else empty end]
	   + [(.labels // {}) | to_entries[] | "--label", "\(.key)=\(.value)"]) | @sh')
	# user-data writes a start script (sh quoting, so any label value is
	# safe) and a systemd unit that runs it and restarts the agent.
	userdata=$(
		cat <<USERDATA
#!/bin/sh
# Colony agent, launched by the exec provider (pool $POOL, key $key).
mkdir -p /etc/colony
cat >/etc/colony/start.sh <<'START'
#!/bin/sh
# The node name is the EC2 instance ID: the leader maps members to instances by it.
TOKEN=\$(curl -sX PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
ID=\$(curl -sH "X-aws-ec2-metadata-token: \$TOKEN" http://169.254.169.254/latest/meta-data/instance-id)
exec /usr/local/bin/colony agent --node-name "\$ID" --data-dir /var/lib/colony $agent_flags ${COLONY_AGENT_ARGS:-}
START
cat >/etc/systemd/system/colony.service <<'UNIT'
[Unit]
Description=Colony agent
After=network-online.target
Wants=network-online.target
[Service]
ExecStart=/bin/sh /etc/colony/start.sh
Restart=always
KillSignal=SIGTERM
TimeoutStopSec=30
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now colony
USERDATA
	)
	extra=""
	[ -n "${EC2_KEY_NAME:-}" ] && extra="$extra --key-name $EC2_KEY_NAME"
	[ -n "${EC2_INSTANCE_PROFILE:-}" ] && extra="$extra --iam-instance-profile Name=$EC2_INSTANCE_PROFILE"
	out='{"Instances": []}'
	# One call per slot: tags differ by index, and each slot has its own
	# ClientToken, so a repeated call returns the slot's existing instance.
	for idx in $(printf '%s' "$req" | jq -r '.indexes[]'); do
		tags=$(jq -cn --arg pool "$POOL" --arg key "$key" --arg idx "$idx" --arg type "$type" --arg labels "$labels" '
		  [{ResourceType: "instance", Tags: [
		     {Key: "Name", Value: "colony-\($pool)-\($idx)"},
		     {Key: "colony:pool", Value: $pool}, {Key: "colony:key", Value: $key},
		     {Key: "colony:index", Value: $idx}, {Key: "colony:type", Value: $type},
		     {Key: "colony:labels", Value: $labels}]}]')
		# shellcheck disable=SC2086 # $EC2_SECURITY_GROUPS and $extra are word lists
		one=$(ec2 run-instances \
			--client-token "$key-$idx" \
			--image-id "$EC2_AMI" --instance-type "$type" --count 1 \
			--subnet-id "$EC2_SUBNET" ${EC2_SECURITY_GROUPS:+--security-group-ids $EC2_SECURITY_GROUPS} \
			--metadata-options HttpTokens=required \
			--tag-specifications "$tags" \
			--user-data "$userdata" $extra)
		out=$(jq -n --argjson a "$out" --argjson b "$one" '{Instances: ($a.Instances + $b.Instances)}')
	done
	printf '%s' "$out" | jq --arg pool "$POOL" "{instances: $TO_COLONY}"
	;;

terminate)
	ids=$(printf '%s' "$req" | jq -r '.ids | join(" ")')
	[ -n "$ids" ] || {
		echo '{"terminated": []}'
		exit 0
	}
	# Only instances of this pool, and only those that exist: terminating an
	# unknown ID fails the whole EC2 call, and a gone one is success here.
	# shellcheck disable=SC2086
	desc=$(ec2 describe-instances --filters "Name=tag:colony:pool,Values=$POOL" \
		"Name=instance-state-name,Values=pending,running,stopping,stopped")
	mine=$(printf '%s' "$desc" |
		jq -r --arg ids "$ids" '($ids | split(" ")) as $want
		  | [.Reservations[].Instances[].InstanceId | select(. as $i | $want | index($i))] | join(" ")')
	if [ -n "$mine" ]; then
		# shellcheck disable=SC2086
		ec2 terminate-instances --instance-ids $mine >/dev/null
	fi
	jq -n --arg m "$mine" '{terminated: ($m | split(" ") | map(select(. != "")))}'
	;;
esac
