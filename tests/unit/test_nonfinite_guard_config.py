"""The non-finite guard (motif_titan.infra.nonfinite_guard) in real training runs: "stop" ends the run before the
bad step's optimizer update and checkpoint, "skip" drops the step's update, counts skips and stops after too
many in a row."""

import re

import pytest

from motif_titan.infra.nonfinite_guard import GuardConfig


@pytest.mark.parametrize("fields,message", [
    ({"on_nonfinite": "ignore"}, "guard.on_nonfinite = 'ignore': allowed values are 'stop' or 'skip'"),
    ({"max_consecutive_skips": 0}, "guard.max_consecutive_skips = 0: must be an integer >= 1"),
    ({"inject_nonfinite_grad_steps": [0]}, "guard.inject_nonfinite_grad_steps = [0]: steps are integers >= 1"),
])
def test_guard_fields_are_validated(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GuardConfig(**fields)


