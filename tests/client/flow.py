"""The Orders API's main flow, driven through a Python client generated from the checked-in
OpenAPI document (openapi-python-client; scripts/client-test.sh generates it and runs this file).

It uses only the generated client's API: its operation functions (`sync_detailed`), models,
`Response.status_code/.headers/.parsed/.content`, and its httpx client for the one request the
document cannot describe (the file behind the export's redirect). Each step says what a
consumer relies on; a step that fails names the operation and why, and the steps after it go on
where they do not depend on it.

Usage: PYTHONPATH=<dir holding orders_client> python flow.py --base-url URL --token TOKEN
"""

import argparse
import sys
import time
import traceback
import typing
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
from orders_client import AuthenticatedClient, Client
from orders_client.api.exports import create_export, download_export, get_export
from orders_client.api.orders import (
    create_order,
    delete_order,
    get_order,
    list_orders,
    update_order,
)
from orders_client.api.system import get_health
from orders_client.models import (
    CreateExportRequest,
    CreateOrderRequest,
    ExportFormat,
    ExportResource,
    ExportStatus,
    Health,
    ItemRequest,
    OrderList,
    OrderPatch,
    OrderResource,
    OrderStatus,
)
from orders_client.types import Unset

PROBLEM_JSON = "application/problem+json, application/json;q=0.9"
PAGE_SIZE = 2
EXTRA_ORDERS = 4  # with the first order, five: pages of 2, 2 and 1


class Skip(Exception):
    """A step that cannot run because an earlier one did not produce what it needs."""


class Flow:
    def __init__(self):
        self.state = {}
        self.passed = self.failed = self.skipped = 0

    def need(self, *keys):
        missing = [key for key in keys if key not in self.state]
        if missing:
            raise Skip("needs " + ", ".join(missing) + " from an earlier step")
        return [self.state[key] for key in keys]

    def step(self, name, action):
        try:
            action()
        except Skip as skip:
            self.skipped += 1
            print(f"SKIP {name}: {skip}")
        except AssertionError as failure:
            self.failed += 1
            print(f"FAIL {name}: {failure}")
        except Exception as error:  # noqa: BLE001 (the generated client's own errors are findings)
            self.failed += 1
            print(f"FAIL {name}: {type(error).__name__}: {error} {where(error)}")
        else:
            self.passed += 1
            print(f"ok   {name}")


def where(error):
    """Where in the generated client an exception was raised, e.g. `(at models/error_body.py:93 in from_dict)`."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "orders_client" in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    path = frame.filename.split("orders_client/", 1)[-1]
    return f"(at {path}:{frame.lineno} in {frame.name})"


def expect_status(response, status, operation):
    assert response.status_code == status, (
        f"{operation} answered {int(response.status_code)}, expected {status}: "
        f"{response.content[:300]!r}"
    )


def expect_type(value, cls, operation):
    assert isinstance(value, cls), (
        f"{operation}: parsed {type(value).__name__}, expected {cls.__name__}"
    )


def expect_error(response, status, error, operation):
    """An error body (plain or problem details) parsed by the generated client into a model."""
    expect_status(response, status, operation)
    parsed = response.parsed
    assert parsed is not None, f"{operation}: the client parsed no error model for {status}"
    assert getattr(parsed, "status", None) == status, (
        f"{operation}: parsed error status {getattr(parsed, 'status', None)!r}, expected {status}"
    )
    assert getattr(parsed, "error", None) == error, (
        f"{operation}: parsed error {getattr(parsed, 'error', None)!r}, expected {error!r}"
    )
    trace_id = getattr(parsed, "trace_id", None)
    assert isinstance(trace_id, str) and trace_id, f"{operation}: no traceId in the parsed error"
    return parsed


def header(response, name, operation):
    value = response.headers.get(name)
    assert value, f"{operation} {int(response.status_code)}: no {name} header"
    return value


def order_body(sku="A-1", quantity=2, unit_price="9.99"):
    return CreateOrderRequest(
        items=[ItemRequest(sku=sku, quantity=quantity, unit_price=unit_price)], currency="EUR"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()

    timeout = httpx.Timeout(10.0)
    # Undocumented statuses raise errors.UnexpectedStatus; redirects are answers, not followed.
    anonymous = Client(base_url=args.base_url, timeout=timeout, raise_on_unexpected_status=True)
    client = AuthenticatedClient(
        base_url=args.base_url,
        token=args.token,
        timeout=timeout,
        raise_on_unexpected_status=True,
        follow_redirects=False,
    )
    problem_client = client.with_headers({"Accept": PROBLEM_JSON})
    flow = Flow()
    state = flow.state

    def optional_headers_are_strings():
        # A client must not be able to send `If-Match: null`, nor fail on the value it is given.
        problems = []
        for module, parameter in [
            (create_order, "idempotency_key"),
            (get_order, "if_none_match"),
            (update_order, "if_match"),
            (delete_order, "if_match"),
        ]:
            hint = typing.get_type_hints(module.sync_detailed)[parameter]
            if type(None) in typing.get_args(hint):
                problems.append(f"{module.__name__.rsplit('.', 1)[-1]}({parameter}: {hint})")
        assert not problems, (
            "header parameters whose schema admits null: " + ", ".join(problems)
        )

    def list_filter_is_order_status():
        hint = typing.get_type_hints(list_orders.sync_detailed)["status"]
        assert OrderStatus in typing.get_args(hint), (
            f"list_orders(status: {hint}): the parameter's schema is an inline enum that "
            "generates a duplicate type, not a reference to OrderStatus"
        )

    def health():
        response = get_health.sync_detailed(client=anonymous)
        expect_status(response, 200, "getHealth")
        expect_type(response.parsed, Health, "getHealth")
        assert response.parsed.status == "healthy", f"getHealth: {response.parsed.status!r}"

    def create():
        key = f"client-flow-{uuid.uuid4()}"
        response = create_order.sync_detailed(client=client, body=order_body(), idempotency_key=key)
        expect_status(response, 201, "createOrder")
        order = response.parsed
        expect_type(order, OrderResource, "createOrder")
        assert order.status == OrderStatus.PENDING, f"createOrder: status {order.status!r}"
        assert order.total == "19.98", f"createOrder: total {order.total!r}"
        etag = header(response, "ETag", "createOrder")
        location = header(response, "Location", "createOrder")
        assert location.endswith(f"/api/orders/{order.id}"), f"createOrder: Location {location}"
        state.update(order_id=order.id, etag=etag, idempotency_key=key, ids=[order.id])

    def create_again():
        order_id, key = flow.need("order_id", "idempotency_key")
        response = create_order.sync_detailed(client=client, body=order_body(), idempotency_key=key)
        expect_status(response, 201, "createOrder (retry)")
        expect_type(response.parsed, OrderResource, "createOrder (retry)")
        assert response.parsed.id == order_id, (
            f"createOrder (retry): a second order {response.parsed.id}, expected {order_id}"
        )

    def read():
        order_id, etag = flow.need("order_id", "etag")
        response = get_order.sync_detailed(order_id, client=client)
        expect_status(response, 200, "getOrder")
        expect_type(response.parsed, OrderResource, "getOrder")
        assert response.parsed.id == order_id
        got = header(response, "ETag", "getOrder")
        assert got == etag, f"getOrder: ETag {got}, expected the creation's {etag}"

    def not_modified():
        order_id, etag = flow.need("order_id", "etag")
        response = get_order.sync_detailed(order_id, client=client, if_none_match=etag)
        expect_status(response, 304, "getOrder (If-None-Match)")
        assert response.parsed is None, f"getOrder 304: parsed {response.parsed!r}"
        assert response.content == b"", "getOrder 304 has a body"
        assert header(response, "ETag", "getOrder (If-None-Match)") == etag

    def update_current():
        order_id, etag = flow.need("order_id", "etag")
        response = update_order.sync_detailed(
            order_id, client=client, body=OrderPatch(status=OrderStatus.PAID), if_match=etag
        )
        expect_status(response, 200, "updateOrder (If-Match: current)")
        expect_type(response.parsed, OrderResource, "updateOrder")
        assert response.parsed.status == OrderStatus.PAID
        new_etag = header(response, "ETag", "updateOrder")
        assert new_etag != etag, "updateOrder: the ETag did not change"
        state.update(stale_etag=etag, etag=new_etag)

    def update_stale():
        order_id, stale = flow.need("order_id", "stale_etag")
        response = update_order.sync_detailed(
            order_id, client=client, body=OrderPatch(status=OrderStatus.SHIPPED), if_match=stale
        )
        expect_error(response, 412, "PreconditionFailed", "updateOrder (If-Match: stale)")
        current = get_order.sync_detailed(order_id, client=client)
        expect_status(current, 200, "getOrder")
        assert current.parsed.status == OrderStatus.PAID, "the refused patch changed the order"

    def update_unconditional():
        (order_id,) = flow.need("order_id")
        response = update_order.sync_detailed(
            order_id, client=client, body=OrderPatch(status=OrderStatus.SHIPPED)
        )
        expect_status(response, 200, "updateOrder (no If-Match)")
        expect_type(response.parsed, OrderResource, "updateOrder")
        assert response.parsed.status == OrderStatus.SHIPPED
        state["etag"] = header(response, "ETag", "updateOrder")

    def page_through():
        (ids,) = flow.need("ids")
        for n in range(EXTRA_ORDERS):
            response = create_order.sync_detailed(client=client, body=order_body(sku=f"B-{n}"))
            expect_status(response, 201, "createOrder")
            ids.append(response.parsed.id)
        seen, pages = [], []
        arguments = {"top": PAGE_SIZE}
        for _ in range(10):
            response = list_orders.sync_detailed(client=client, **arguments)
            expect_status(response, 200, "listOrders")
            page = response.parsed
            expect_type(page, OrderList, "listOrders")
            pages.append(len(page.value))
            seen.extend(order.id for order in page.value)
            if isinstance(page.next_link, Unset) or page.next_link is None:
                break
            # The next page through the client's own parameters, from nextLink's query.
            query = parse_qs(urlsplit(page.next_link).query)
            arguments = {"top": int(query["top"][0])}
            arguments["continuation_token"] = query["continuationToken"][0]
        else:
            raise AssertionError("listOrders: still a nextLink after 10 pages")
        assert seen == ids, f"listOrders: pages held {seen}, expected {ids} in creation order"
        assert pages == [2, 2, 1], f"listOrders: page sizes {pages}, expected [2, 2, 1]"
        shipped = list_orders.sync_detailed(client=client, status=OrderStatus.SHIPPED)
        expect_status(shipped, 200, "listOrders (status=shipped)")
        assert [o.id for o in shipped.parsed.value] == ids[:1], "listOrders: status filter"

    def delete():
        order_id, etag = flow.need("order_id", "etag")
        response = delete_order.sync_detailed(order_id, client=client, if_match=etag)
        expect_status(response, 204, "deleteOrder (If-Match: current)")
        state["deleted"] = True

    def gone():
        (order_id, _) = flow.need("order_id", "deleted")
        response = get_order.sync_detailed(order_id, client=client)
        expect_error(response, 404, "NotFound", "getOrder (deleted)")

    def gone_as_problem():
        (order_id, _) = flow.need("order_id", "deleted")
        response = get_order.sync_detailed(order_id, client=problem_client)
        content_type = response.headers.get("Content-Type", "")
        assert content_type.startswith("application/problem+json"), (
            f"getOrder (deleted, problem+json preferred): Content-Type {content_type!r}"
        )
        expect_error(response, 404, "NotFound", "getOrder (deleted, problem+json preferred)")

    def invalid_as_problem():
        response = create_order.sync_detailed(client=problem_client, body=order_body(quantity=0))
        content_type = response.headers.get("Content-Type", "")
        assert content_type.startswith("application/problem+json"), (
            f"createOrder (invalid, problem+json preferred): Content-Type {content_type!r}"
        )
        parsed = expect_error(response, 400, "BadRequest", "createOrder (invalid, problem+json)")
        details = getattr(parsed, "details", None)
        assert isinstance(details, list) and details, "createOrder 400: no details parsed"
        fields = [detail.field for detail in details]
        assert "items[0].quantity" in fields, f"createOrder 400: details name {fields}"

    def export_start():
        response = create_export.sync_detailed(
            client=client, body=CreateExportRequest(format_=ExportFormat.CSV)
        )
        expect_status(response, 202, "createExport")
        job = response.parsed
        expect_type(job, ExportResource, "createExport")
        location = header(response, "Location", "createExport")
        assert location.endswith(f"/api/exports/{job.id}"), f"createExport: Location {location}"
        retry_after = header(response, "Retry-After", "createExport")
        assert retry_after.isdigit(), f"createExport: Retry-After {retry_after!r}"
        state["export_id"] = job.id

    def export_poll():
        (export_id,) = flow.need("export_id")
        deadline = time.monotonic() + 30
        while True:
            response = get_export.sync_detailed(export_id, client=client)
            expect_status(response, 200, "getExport")
            job = response.parsed
            expect_type(job, ExportResource, "getExport")
            if job.status == ExportStatus.SUCCEEDED:
                break
            assert job.status != ExportStatus.FAILED, "getExport: the export failed"
            assert time.monotonic() < deadline, f"getExport: still {job.status} after 30 s"
            retry_after = header(response, "Retry-After", "getExport (unfinished)")
            time.sleep(min(int(retry_after), 1) or 0.1)
        assert job.order_count == EXTRA_ORDERS, (
            f"getExport: {job.order_count} orders exported, expected {EXTRA_ORDERS}"
        )
        state["export_done"] = True

    def export_download():
        export_id, _ = flow.need("export_id", "export_done")
        response = download_export.sync_detailed(export_id, client=client)
        expect_status(response, 302, "downloadExport")
        assert response.parsed is None, f"downloadExport 302: parsed {response.parsed!r}"
        location = header(response, "Location", "downloadExport")
        # The file is outside the document (a storage link, or the handler's own route).
        file = client.get_httpx_client().get(location)
        assert file.status_code == 200, f"the export's file answered {file.status_code}"
        assert "B-0" in file.text, "the export's file does not list the orders"

    flow.step("the generated API: optional header parameters take strings, never None", optional_headers_are_strings)
    flow.step("the generated API: listOrders' status filter is the OrderStatus model", list_filter_is_order_status)
    flow.step("getHealth: 200 healthy, anonymous", health)
    flow.step("createOrder with Idempotency-Key: 201 with ETag and Location", create)
    flow.step("createOrder retried with the same key: the same order", create_again)
    flow.step("getOrder: 200 with the creation's ETag", read)
    flow.step("getOrder with If-None-Match: 304, no body", not_modified)
    flow.step("updateOrder with the current If-Match: 200, new ETag", update_current)
    flow.step("updateOrder with a stale If-Match: 412, order unchanged", update_stale)
    flow.step("updateOrder without If-Match: 200", update_unconditional)
    flow.step("listOrders: pages through nextLink, in creation order; status filter", page_through)
    flow.step("deleteOrder with the current If-Match: 204", delete)
    flow.step("getOrder after delete: 404 error body", gone)
    flow.step("getOrder after delete, problem+json preferred: 404 problem details", gone_as_problem)
    flow.step("createOrder invalid, problem+json preferred: 400 problem details with details", invalid_as_problem)
    flow.step("createExport: 202 with Location and Retry-After", export_start)
    flow.step("getExport: polled until Succeeded", export_poll)
    flow.step("downloadExport: 302 to the file, not followed; the file reads", export_download)

    print()
    print(f"client flow: {flow.passed} passed, {flow.failed} failed, {flow.skipped} skipped")
    return 0 if flow.failed == 0 and flow.skipped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
