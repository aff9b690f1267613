"""The models of every external shape: one source of truth, in pydantic v2 (`extra="forbid"`).

    document.py   the desired-state document (policy/desired-state.json)
    bodies.py     HTTP request bodies (policy verify/plan/apply, removal approvals)
    tickets.py    the ticket webhook's payload
    messages.py   queue messages: UPN changes (`upn-changes`) and policy jobs (`policy-jobs`)
    problems.py   pydantic's errors as this project's `{field, problem}` and `InputError`
    __main__.py   `python -m shared.schemas` (`make schemas`): the JSON Schema and the OpenAPI components

Each module imports pydantic, so nothing here is imported by `function_app.py` at import time (cold
start): handlers and use cases import these modules inside the function that needs them.
"""
