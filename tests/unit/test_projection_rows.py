"""projections/rows.py: a multi-row statement's columns and numbered array parameters come from one table."""

from __future__ import annotations

import pytest

from projections.rows import arrays, insert_rows, unnest_select, update_rows

COLS = {"id": "uuid", "name": "text", "labels": "jsonb"}


def test_insert_lists_the_columns_and_one_typed_array_each_in_order() -> None:
    assert insert_rows("t", COLS, " ON CONFLICT DO NOTHING") == (
        "INSERT INTO t (id, name, labels) SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])"
        " ON CONFLICT DO NOTHING")


def test_parameters_can_start_after_another_statement_s() -> None:
    assert unnest_select({"a": "bigint", "b": "bytea"}, 17) == "unnest($17::bigint[], $18::bytea[])"


def test_update_matches_rows_by_key_and_names_the_new_values_u() -> None:
    assert update_rows("t", "id", COLS, ["name = COALESCE(u.name, t.name)"]) == (
        "UPDATE t t SET name = COALESCE(u.name, t.name) FROM unnest($1::uuid[], $2::text[], $3::jsonb[])"
        " AS u(id, name, labels) WHERE t.id = u.id")


def test_arrays_transposes_rows_into_one_list_per_column() -> None:
    assert arrays(COLS, [(1, "a", "{}"), (2, "b", None)]) == [[1, 2], ["a", "b"], ["{}", None]]
    assert arrays(COLS, []) == [[], [], []]


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError):
        arrays(COLS, [(1, "a")])
    with pytest.raises(ValueError):
        arrays(COLS, [(1, "a", "{}"), (2, "b")])  # zip(strict=True): ragged rows
