"""The pure logic of typed values: the core's Avro encoding read back by fastavro (Avro's
reference reader in Python), inference, the schemas written and read back, and the checks a
registered schema puts on a file."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_worker.api.spec import CsvIngestionSpec, ValueFormat
from ingest_worker.csv.dialect import ConfigError, Layout
from ingest_worker.csv.encode import Bad, ChunkEncoder
from ingest_worker.schema import avro, jsonschema
from ingest_worker.schema.columns import ColumnType
from ingest_worker.schema.infer import infer, sample_rows
from ingest_worker.schema.registry import Registered, parse_frame
from ingest_worker.schema.settle import (
    MemoryLedger,
    Settled,
    Subject,
    _fit,
    record_name,
    settle,
    value_subject,
)
from tests.worker.test_units import whole_chunk

COLUMNS = ("id", "amount", "day", "at", "note")
TYPES = [ColumnType("int"), ColumnType("decimal", True, 18, 4), ColumnType("date", True),
         ColumnType("timestamp", True), ColumnType("string", True)]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

rows = st.lists(st.tuples(
    st.integers(-(2**63), 2**63 - 1),
    st.one_of(st.none(), st.integers(-(10**18) + 1, 10**18 - 1)),
    st.one_of(st.none(), st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))),
    st.one_of(st.none(), st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30))),
    st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]),
                                 min_size=1, max_size=12)),
), min_size=1, max_size=40)


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


@settings(max_examples=200, deadline=None)
@given(rows)
def test_avro_values_decode_to_the_source_values(data: list[tuple[Any, ...]]) -> None:
    """Whatever the value, the core's Avro bytes decode (fastavro, the registered schema) to
    exactly the value the CSV field holds."""
    lines = []
    for i, amount, day, at, note in data:
        lines.append(",".join([
            str(i),
            "" if amount is None else str(Decimal(amount).scaleb(-4)),
            "" if day is None else day.isoformat(),
            "" if at is None else at.isoformat(sep=" ") + "Z",
            "" if note is None else _csv_field(note),
        ]))
    layout = Layout(columns=COLUMNS, column_types=dict(zip(COLUMNS, TYPES, strict=True)),
                    value_format="avro", frame=b"\0\0\0\0\7", id_prefix="p")
    enc = ChunkEncoder(layout).encode(whole_chunk(("\n".join(lines) + "\n").encode(), layout))
    assert not enc.bad()
    schema = fastavro.parse_schema(avro.record_schema("t.R", COLUMNS, TYPES, ("_id",)))
    for value, (i, amount, day, at, note) in zip(enc.values, data, strict=True):
        assert parse_frame(value)[0] == 7
        got = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)
        assert got["id"] == i
        assert got["amount"] == (None if amount is None else Decimal(amount).scaleb(-4))
        assert got["day"] == day
        assert got["at"] == (None if at is None else at.replace(tzinfo=dt.UTC))
        assert got["note"] == note


def test_a_value_avro_cannot_hold_is_a_bad_row_naming_the_column() -> None:
    layout = Layout(columns=("at", "n"), column_types={"at": "timestamp", "n": "int"},
                    value_format="avro", include_event_id=False)
    enc = ChunkEncoder(layout).encode(whole_chunk(
        b"2024-01-01T00:00:00.1234567Z,1\n2024-01-01T00:00:00.1234560Z,2\n", layout))
    assert [b.reason for b in enc.bad().rows] == [
        "column 'at': finer than microseconds (Avro's timestamp-micros): "
        "'2024-01-01T00:00:00.1234567Z'"]
    assert len(enc.values) == 1


def test_a_not_nullable_column_refuses_an_empty_field() -> None:
    strict = ColumnType("int", nullable=False)
    layout = Layout(columns=("n", "s"), column_types={"n": strict}, include_event_id=False)
    got = ChunkEncoder(layout).exact_record(b" ,x", 1, 0)
    assert isinstance(got, Bad)
    assert got.reason == "column 'n': empty value in a non-nullable column: ' '"


@pytest.mark.parametrize(("values", "want"), [
    (["1", "-2", "30"], ColumnType("int")),
    (["1", "2.5", "3e2"], ColumnType("float")),
    (["true", "FALSE"], ColumnType("bool")),
    (["1", "0"], ColumnType("int")),  # codes, not booleans
    (["2024-01-31", ""], ColumnType("date", nullable=True)),
    (["2024-01-31", "2024-01-31T10:00Z"], ColumnType("timestamp")),
    (["2024-02-30"], ColumnType("string")),
    (["1", "x"], ColumnType("string")),
    (["", " "], ColumnType("string")),
    ([str(2**63)], ColumnType("float")),
])
def test_inference_takes_the_narrowest_type(values: list[str], want: ColumnType) -> None:
    assert infer(["c"], [[v] for v in values], avro=True) == {"c": want}


def test_inference_skips_rows_of_another_width_and_samples_whole_records() -> None:
    assert infer(["a", "b"], [["1", "x"], ["oops"], ["2", "y"]], avro=True) == {
        "a": ColumnType("int"), "b": ColumnType("string")}
    dialect = Layout(columns=("a",)).python_dialect()
    got = sample_rows(b'1,"x\ny"\n\n2,z\n3,"cut', "utf-8", dialect, 10)
    assert got == [["1", "x\ny"], ["2", "z"]]


def test_schemas_read_back_into_the_same_columns() -> None:
    columns = ("id", "Unit Price", "day", "at", "note")
    fields, meta = avro.columns_of(avro.record_schema("a.B", columns, TYPES, ("_id",)))
    assert [n for n, _ in fields] == ["id", "Unit_Price", "day", "at", "note"]
    assert [t for _, t in fields] == TYPES and meta == ("_id",)
    typed = [*TYPES[:2], ColumnType("date", True, format="%d/%m/%Y"), *TYPES[3:]]
    props, meta = jsonschema.columns_of(jsonschema.object_schema("B", columns, typed, ()))
    assert props == list(zip(columns, typed, strict=True)) and meta == ()
    with pytest.raises(ConfigError, match="same Avro field name: a_b"):
        avro.field_names(("a b", "a-b"))


def test_settled_schema_round_trips_through_status() -> None:
    settled = Settled("avro", tuple(zip(COLUMNS, TYPES, strict=True)), Subject("t-value", 2, 9),
                      Subject("t-key", 1, 3), restart=1)
    back = Settled.from_wire(settled.to_wire())
    assert back == settled and back.frame == b"\0\0\0\0\x09" and back.key_frame == b"\0\0\0\0\3"


def _spec(**kafka: Any) -> CsvIngestionSpec:
    return CsvIngestionSpec.model_validate({
        "source": {"url": "/x.csv"},
        "kafka": {"bootstrapServers": "b", "topic": "9-orders.eu", "valueFormat": "avro",
                  "schemaRegistry": {"url": "http://r", **kafka}}})


def test_subject_names() -> None:
    assert record_name(_spec()) == "csvkafka._9_orders_eu"
    assert value_subject(_spec(), "n.R") == "9-orders.eu-value"
    assert value_subject(_spec(subjectNameStrategy="RecordNameStrategy"), "n.R") == "n.R"
    assert value_subject(_spec(subjectNameStrategy="TopicRecordNameStrategy"), "n.R") == \
        "9-orders.eu-n.R"


def test_a_registered_schema_the_file_does_not_fit_is_refused_by_name() -> None:
    schema = avro.record_schema("a.B", ("id", "name"), [ColumnType("int"), ColumnType()],
                                ("_id",))
    reg = Registered("t-value", 3, 11, schema, "AVRO")
    got = _fit(_spec().kafka.value_format, reg, ("name", "id"), {}, ("_id",))
    assert got == (("id", ColumnType("int")), ("name", ColumnType()))
    fmt = _spec().kafka.value_format
    with pytest.raises(ConfigError, match="column\\(s\\) extra are not in the schema"):
        _fit(fmt, reg, ("id", "name", "extra"), {}, ("_id",))
    with pytest.raises(ConfigError, match="has the field\\(s\\) name, which the file has no"):
        _fit(fmt, reg, ("id",), {}, ("_id",))
    with pytest.raises(ConfigError, match="column id is declared string, the schema"):
        _fit(fmt, reg, ("id", "name"), {"id": ColumnType()}, ("_id",))
    with pytest.raises(ConfigError, match="metadata fields"):
        _fit(fmt, reg, ("id", "name"), {}, ())


def test_spec_rules_of_the_object_form() -> None:
    base = {"source": {"url": "/x"}, "kafka": {"bootstrapServers": "b", "topic": "t"}}
    for bad in ({"type": "int", "scale": 2}, {"type": "decimal", "precision": 4, "scale": 5},
                {"type": "int", "format": "%Y"}, {"type": "date", "timezone": "+01:00"},
                {"type": "timestamp", "timezone": "Europe/Paris"}):
        with pytest.raises(ValueError):
            CsvIngestionSpec.model_validate({**base, "format": {"columnTypes": {"c": bad}}})
    with pytest.raises(ValueError, match="need schemaRegistry"):
        CsvIngestionSpec.model_validate({**base, "kafka": {**base["kafka"], "valueFormat": "avro"}})
    with pytest.raises(ValueError, match=r"inferTypes needs kafka\.valueFormat"):
        CsvIngestionSpec.model_validate({**base, "format": {"inferTypes": {}}})


def test_a_recorded_schema_is_reused_and_its_format_kept() -> None:
    """What status records is the schema: no registry call, no inference; a spec edit to
    another format is refused until spec.restart starts over."""
    ledger = MemoryLedger()
    settled = Settled("avro", (("id", ColumnType("int")),), Subject("t-value", 1, 5))
    ledger.record_schema(settled.to_wire())
    spec = _spec()
    got = settle(spec, ("id",), lambda: pytest.fail("sampled"), ledger, None)
    assert got.frame == b"\0\0\0\0\5" and got.columns == settled.columns
    edited = spec.model_copy(update={"kafka": spec.kafka.model_copy(
        update={"value_format": ValueFormat.JSON_SCHEMA})})
    with pytest.raises(ConfigError, match=r"written as avro values .* raise spec\.restart"):
        settle(edited, ("id",), list, ledger, None)
    with pytest.raises(ConfigError, match=r"file.s columns \(id, x\) are not"):
        settle(spec, ("id", "x"), list, ledger, None)
