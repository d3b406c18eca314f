"""schemathesis hooks for scripts/fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

Random path parameters almost never name a record that exists, so every handler would only
ever answer 404. Half of the generated subject codes and record ids are therefore replaced by
ones the fuzz script created (chosen from the generated value, so a case replays the same).
And a fuzzing account must not lock itself out: a PATCH of one of the accounts whose tokens
the run uses (deactivation, a role change) would turn every later answer into a 401, so such
a PATCH is aimed at a sacrificial account instead.
"""

import os
import zlib

import schemathesis

SUBJECT = os.environ.get("CASEBOOK_FUZZ_SUBJECT", "")
PROTECTED_USERS = {int(x) for x in os.environ.get("CASEBOOK_FUZZ_PROTECTED_USERS", "").split(",") if x}
SPARE_USER = int(os.environ.get("CASEBOOK_FUZZ_SPARE_USER", "0") or 0)


def _pick(value: object) -> int:
    return zlib.crc32(repr(value).encode("utf-8", "surrogatepass"))


@schemathesis.hook
def map_case(context, case):
    params = case.path_parameters
    if not isinstance(params, dict):
        return case
    code = params.get("subject_code")
    if SUBJECT and isinstance(code, str) and _pick(code) % 2 == 0:
        params["subject_code"] = SUBJECT
    rid = params.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool) and _pick(rid) % 2 == 0:
        params["id"] = 1 + _pick(rid) % 3
    uid = params.get("user_id")
    try:
        # as the server reads it: "7" and "+7" name user 7 too
        uid = int(str(uid).strip())
    except ValueError:
        uid = None
    if uid in PROTECTED_USERS and case.method.upper() != "GET" and SPARE_USER:
        params["user_id"] = SPARE_USER
    return case
