#!/bin/sh
# A kubelet credential provider exec plugin for tests/credential_plugin.rs.
#
# It appends the CredentialProviderRequest it reads on stdin to $FAKE_LOG (one line per
# run, so the line count is the number of runs) and answers as the FAKE_* variables say.
# The first argument is the user name it hands out.
set -eu

request=$(cat)
printf '%s\n' "$request" >> "$FAKE_LOG"

if [ -n "${FAKE_SLEEP:-}" ]; then
    # Replace the shell so that killing the plugin kills the sleep.
    exec sleep "$FAKE_SLEEP"
fi
if [ -n "${FAKE_DELAY:-}" ]; then
    sleep "$FAKE_DELAY"
fi
if [ -n "${FAKE_EXIT:-}" ]; then
    echo "fake failure for ${1:-nobody}" >&2
    exit "$FAKE_EXIT"
fi
if [ -n "${FAKE_STDOUT:-}" ]; then
    printf '%s' "$FAKE_STDOUT"
    exit 0
fi

duration=""
if [ -n "${FAKE_CACHE_DURATION:-}" ]; then
    duration=",\"cacheDuration\":\"$FAKE_CACHE_DURATION\""
fi
printf '{"apiVersion":"%s","kind":"CredentialProviderResponse","cacheKeyType":"%s"%s,"auth":{"%s":{"username":"%s","password":"%s"}}}\n' \
    "${FAKE_API_VERSION:-credentialprovider.kubelet.k8s.io/v1}" \
    "${FAKE_CACHE_KEY_TYPE:-Image}" \
    "$duration" \
    "${FAKE_AUTH_KEY:-*.registry.io}" \
    "${1:-}" \
    "${FAKE_PASSWORD:-}"
