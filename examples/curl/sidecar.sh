#!/usr/bin/env bash
# Call the sidecar's keys API with curl.
#
#   sidecar.sh keys          print the key pair document (GET /v1/keys)
#   sidecar.sh verify        read a key from standard input and print {"valid", "matched"};
#                            exit 0 if the key is valid, 1 if not
#   sidecar.sh watch [N]     print the version now and after each rotation, using the long
#                            poll (GET /v1/keys?wait=60 with If-None-Match); stop after N changes
#
# SIDECAR_TOKEN_FILE names the token file shared with the sidecar (required).
# SIDECAR_URL is the sidecar's address (default http://127.0.0.1:8910).
#
# The token goes to curl in a config read from a pipe and the key on standard input,
# so neither shows in the process list.
set -euo pipefail

url="${SIDECAR_URL:-http://127.0.0.1:8910}"
token_file="${SIDECAR_TOKEN_FILE:?set SIDECAR_TOKEN_FILE to the token file shared with the sidecar}"
wait_seconds=60

IFS= read -r token <"$token_file" || true
if [ -z "$token" ]; then
    echo "the token file $token_file is empty" >&2
    exit 2
fi

# Escape backslashes and double quotes for a quoted string in a curl config or JSON.
quote() {
    local text="${1//\\/\\\\}"
    printf '%s' "${text//\"/\\\"}"
}

# curl with the token header and the common options; extra arguments follow.
call() {
    curl --silent --show-error --config <(printf 'header = "X-Sidecar-Token: %s"\n' "$(quote "$token")") "$@"
}

keys() {
    call --fail-with-body --max-time 5 "$url/v1/keys"
    echo
}

verify() {
    local key reply
    IFS= read -r key || true
    if [ -z "$key" ]; then
        echo "verify: no key on standard input" >&2
        exit 2
    fi
    if ! reply=$(call --fail-with-body --max-time 5 --header 'Content-Type: application/json' \
        --data-binary @- "$url/v1/verify" <<<"{\"key\": \"$(quote "$key")\"}"); then
        echo "verify failed: $reply" >&2
        exit 2
    fi
    echo "$reply"
    [[ "$reply" == *'"valid":true'* ]]
}

watch() {
    local limit="${1:-0}" changes=-1 etag="" delay=1 reply status body
    # Global, so that the EXIT trap can still read it after the function returns.
    headers=$(mktemp)
    trap 'rm -f "$headers"' EXIT
    while :; do
        local condition=()
        [ -n "$etag" ] && condition=(--header "If-None-Match: $etag")
        # The body comes first and the status code last, on a line of its own.
        if ! reply=$(call --max-time $((wait_seconds + 10)) --dump-header "$headers" \
            --write-out '\n%{http_code}' "${condition[@]}" "$url/v1/keys?wait=$wait_seconds"); then
            echo "watch: request failed; retrying in $delay s" >&2
            sleep "$delay"
            delay=$((delay < 30 ? delay * 2 : 30))
            continue
        fi
        status="${reply##*$'\n'}"
        body="${reply%$'\n'*}"
        case "$status" in
        200)
            delay=1
            etag=$(sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' "$headers" | tr -d '\r')
            # Print only the version: an application keeps the keys in memory, not on a terminal.
            printf '{%s}\n' "$(printf '%s' "$body" | grep -o '"version_id":"[^"]*"')"
            changes=$((changes + 1))
            if [ "$limit" -gt 0 ] && [ "$changes" -ge "$limit" ]; then
                return 0
            fi
            ;;
        304) ;; # the wait ended without a new version: ask again
        *)
            echo "watch: HTTP $status: $body; retrying in $delay s" >&2
            sleep "$delay"
            delay=$((delay < 30 ? delay * 2 : 30))
            ;;
        esac
    done
}

case "${1:-}" in
keys) keys ;;
verify) verify ;;
watch) watch "${2:-0}" ;;
*)
    echo "usage: $0 keys | verify (key on standard input) | watch [CHANGES]" >&2
    exit 2
    ;;
esac
