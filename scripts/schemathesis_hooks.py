"""Schemathesis extension for the contract pass of scripts/conformance.sh.

Schemathesis' own `response_headers_conformance` validates the headers a response definition
declares (present ones against their schemas, required ones for presence). It cannot see the
other direction: a header the service sends that the document leaves out, which gateways and
generated clients then never learn about. `undeclared_response_headers` fails on those, for the
headers that carry meaning for a client; transport headers (Content-Type, Content-Length, Date,
Connection, ...) are left alone.
"""

import re

import schemathesis

# Lower-case names of the headers the service sends with meaning for a client.
CONTRACT_HEADERS = (
    "accept-patch",
    "allow",
    "cache-control",
    "etag",
    "location",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
    "www-authenticate",
    "x-request-id",
)


@schemathesis.check
class undeclared_response_headers:  # noqa: N801 (the check's name as schemathesis reports it)
    """Every contract header a response carries is declared on its response definition.

    Collected over the whole run and reported once, as a table of operation, status and the
    headers to declare: the same headers come back on every response of a status, so one
    failure per response would only repeat them.
    """

    def __init__(self):
        self.undeclared = {}

    def after_response(self, ctx, response, case):
        definition = case.operation.responses.find_by_status_code(response.status_code)
        if definition is None:
            # An undocumented status: status_code_conformance reports it.
            return None
        headers = definition.headers
        declared = {name.lower() for name, _ in headers.items()} if headers else set()
        sent = {name.lower() for name in response.headers}
        missing = {name for name in CONTRACT_HEADERS if name in sent and name not in declared}
        if missing:
            key = (case.operation.label, response.status_code)
            self.undeclared.setdefault(key, set()).update(missing)
        return None

    def after_run(self, ctx):
        if self.undeclared:
            lines = [
                f"{label} {status}: {', '.join(sorted(names))}"
                for (label, status), names in sorted(self.undeclared.items())
            ]
            raise AssertionError(
                "Responses send headers their definitions do not declare:\n" + "\n".join(lines)
            )


# If-Match / If-None-Match as the document declares them: `*`, or a list of entity tags.
_ENTITY_TAGS = re.compile(r'^(\*|(W/)?"[!#-~]*"( *, *(W/)?"[!#-~]*")*)$')


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Keeps a positive case positive: drops a conditional header that breaks its pattern.

    Schemathesis 4.32's coverage phase generates values for header parameters without their
    `pattern` (`If-Match: 0`) and sends them as schema-valid, so the service's 400 for a malformed
    condition is reported as a rejected valid request. The header is optional: without it the
    case is what it claimed to be. Negative cases keep their invalid values (and get 400).
    """
    meta = case.meta
    if meta is None or meta.generation.mode.name.lower() != "positive" or not case.headers:
        return
    for name in ("If-Match", "If-None-Match"):
        value = case.headers.get(name)
        if value is not None and not _ENTITY_TAGS.match(value):
            del case.headers[name]
