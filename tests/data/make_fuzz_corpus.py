"""Generate the data-fault corpus in tests/data/fuzz/: the files of every case and manifest.json,
the expected outcome of each case in strict and in lenient mode.

    python tests/data/make_fuzz_corpus.py        # rewrites tests/data/fuzz/ (commit the result)

Each case is a few good rows plus one fault (bytes, a row, the turn order, the file's format, the
path, the tokenizer, a setting), built by the helpers below, so the corpus is regenerated rather
than edited by hand; the expectation is written next to each case. tests/data/test_fuzz_corpus.py
runs every case through the data layer (PreferenceData, both modes) and checks the manifest; it
also checks that the checked-in corpus is what this script writes.

Manifest entry, per case name:
  what         the fault, in words
  train        path relative to the corpus folder (the test runs there), or {"make": KIND} for a
               path the test creates (symlink_loop, dangling_symlink), or a path that is missing
  validation   the same, or null
  tokenizer    plain (the synthetic word-level one, no chat template) | chat | chat_mismatch
               (a template that renders the system turn only after an assistant turn) |
               chat_no_system (a template that raises on a system turn): TEMPLATES below; any
               other value is a corpus path used as data.tokenizer
  config       data.* overrides; global_batch_size (default 1); reference: read the reference sums
  strict / lenient   {"error": reason, "split": train|validation|tokenizer|truth, "row": int|null,
                      "kind": line|index, "field": str|null}  -- a DataValidationError naming
                      that split's file (data.<split>), row and field
                 or {"kept": pairs, "skipped": {reason: count}}  -- for the train split
"""

import json
import shutil
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "fuzz"
MANIFEST = "manifest.json"

_CHAT = ("{% for m in messages %}<{{ m.role }}> {{ m.content }} </s> {% endfor %}"
         "{% if add_generation_prompt %}<assistant> {% endif %}")
TEMPLATES = {
    "plain": None,
    "chat": _CHAT,
    "chat_mismatch": ("{% for m in messages %}{% if m.role == 'system' %}"
                      "{% if messages[-1].role == 'assistant' %}<system> {{ m.content }} {% endif %}"
                      "{% else %}<{{ m.role }}> {{ m.content }} </s> {% endif %}{% endfor %}"
                      "{% if add_generation_prompt %}<assistant> {% endif %}"),
    "chat_no_system": ("{% if messages[0].role == 'system' %}"
                       "{{ raise_exception('System role not supported') }}{% endif %}" + _CHAT),
}
ROWS = 6          # rows per file unless a case says otherwise
BAD_AT = 3        # the faulty row: line 3 of a JSONL file, index 2 of a JSON list / Parquet table


# ----------------------------------------------------------------------------- rows
def _sum(i: int) -> tuple[str, int]:
    a, b = i % 9, (2 * i) % 9
    return f"{a} + {b} =", a + b


def good(i: int, **changes) -> dict:
    """A valid plain row; `changes` replace fields (... removes one)."""
    prompt, total = _sum(i)
    row = {"id": f"r{i}", "prompt": prompt, "chosen": f" {total}", "rejected": f" {total + 1}",
           "annotator_id": f"annotator_{i % 3}"}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


def conv(i: int, system: bool = False, **changes) -> dict:
    """A valid conversational row: prompt messages, response messages."""
    prompt, total = _sum(i)
    turns = [{"role": "system", "content": "add"}] if system else []
    row = {"id": f"c{i}", "prompt": turns + [{"role": "user", "content": prompt}],
           "chosen": [{"role": "assistant", "content": str(total)}],
           "rejected": [{"role": "assistant", "content": str(total + 1)}]}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


def user(text="1 + 2 ="):
    return {"role": "user", "content": text}


def assistant(text="3"):
    return {"role": "assistant", "content": text}


def jsonl(rows) -> bytes:
    """Rows (dicts, or raw bytes for a line as is) -> JSONL bytes."""
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def with_bad(bad, make=good, count=ROWS, at=BAD_AT) -> list:
    """`count` rows, row `at` (1-based) replaced by `bad` (a row or raw bytes)."""
    return [bad if i == at else make(i) for i in range(1, count + 1)]


# ----------------------------------------------------------------------------- outcomes
def err(reason, row=None, field=None, split="train", kind="line") -> dict:
    """A DataValidationError naming the source of `split` (train, validation, tokenizer, truth)."""
    return {"error": reason, "split": split, "row": row, "kind": kind if row is not None else None,
            "field": field}


def ok(kept, **skipped) -> dict:
    return {"kept": kept, "skipped": skipped}


CASES: dict[str, dict] = {}
FILES: dict[str, object] = {}    # corpus-relative path -> bytes, or a callable(path) writing it


def case(name, what, strict, lenient, train=None, validation=None, tokenizer="plain", config=None,
         global_batch_size=1, reference=False, files=None):
    """Register a case; `files` maps corpus paths to contents (bytes / rows / writer)."""
    for path, content in (files or {}).items():
        FILES[path] = jsonl(content) if isinstance(content, list) else content
    CASES[name] = {"what": what, "train": train, "validation": validation, "tokenizer": tokenizer,
                   "config": config or {}, "global_batch_size": global_batch_size,
                   "reference": reference, "strict": strict, "lenient": lenient}


def row_case(name, what, bad, reason, field, make=good, tokenizer="plain", config=None, at=BAD_AT):
    """A JSONL file of ROWS rows with one bad row: strict stops there, lenient skips it."""
    case(name, what, err(reason, at, field), ok(ROWS - 1, **{reason: 1}), train=f"{name}.jsonl",
         tokenizer=tokenizer, config=config, files={f"{name}.jsonl": with_bad(bad, make, at=at)})


def file_case(name, what, reason, content, suffix=".jsonl", **options):
    """A file that is an error as a whole, in both modes."""
    path = f"{name}{suffix}"
    case(name, what, err(reason), err(reason), train=path, files={path: content}, **options)


# ----------------------------------------------------------------------------- writers
def _parquet(rows, schema=None, cut=None):
    def write(path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq
        table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
        pq.write_table(table, path)
        if cut:
            path.write_bytes(path.read_bytes()[:cut])
    return write


def _hf_disk(splits: dict):
    def write(path: Path):
        import datasets
        datasets.disable_progress_bars()
        datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}) \
            .save_to_disk(str(path))
    return write


def _nested(depth: int) -> bytes:
    return b'{"prompt": ' + b"[" * depth + b"]" * depth + b', "chosen": " 3", "rejected": " 4"}'


# ----------------------------------------------------------------------------- the cases
def define_cases():
    FILES["good.jsonl"] = jsonl([good(i) for i in range(1, ROWS + 1)])

    # --- one bad row in a JSONL file
    row_case("malformed_json", "a truncated JSON line", b'{"prompt": "1 + 2 =", "chosen": ',
             "malformed_json", None)
    row_case("trailing_garbage", "a JSON object followed by more text",
             json.dumps(good(3)).encode() + b" extra", "malformed_json", None)
    row_case("invalid_utf8", "Latin-1 bytes in a line", b'{"prompt": "caf\xe9", "chosen": " 3", "rejected": " 4"}',
             "invalid_utf8", None)
    row_case("not_an_object", "a line holding a list", b"[1, 2]", "not_an_object", None)
    row_case("null_row", "a line holding null", b"null", "not_an_object", None)
    row_case("string_row", "a line holding a string", b'"1 + 2 = 3"', "not_an_object", None)
    row_case("duplicate_key", "the same key twice in one object",
             b'{"prompt": "1 + 2 =", "chosen": " 3", "chosen": " 5", "rejected": " 4"}', "duplicate_key", "chosen")
    row_case("deep_nesting", "a prompt nested 5000 lists deep (RecursionError in the parser)",
             _nested(5000), "nesting_too_deep", None)
    row_case("nested_but_parseable", "a prompt nested 200 lists deep", _nested(200), "bad_message", "prompt[0]")
    row_case("missing_chosen", "no chosen", good(3, chosen=...), "missing_field", "chosen")
    row_case("null_rejected", "rejected is null", good(3, rejected=None), "missing_field", "rejected")
    row_case("missing_prompt", "no prompt with string responses", good(3, prompt=...), "missing_field", "prompt")
    row_case("whitespace_prompt", "a prompt of spaces", good(3, prompt="  \t"), "empty_field", "prompt")
    row_case("chosen_number", "chosen is a number", good(3, chosen=5), "wrong_type", "chosen")
    row_case("chosen_nan", "chosen is NaN", b'{"prompt": "1 + 2 =", "chosen": NaN, "rejected": " 4"}',
             "wrong_type", "chosen")
    row_case("identical_responses", "chosen == rejected", good(3, rejected=good(3)["chosen"]),
             "identical_responses", "rejected")
    row_case("lone_surrogate", "a lone surrogate escape in chosen (TypeError in the tokenizer)",
             b'{"prompt": "1 + 2 =", "chosen": " 3\\ud800", "rejected": " 4"}', "invalid_unicode", "chosen")
    row_case("lone_surrogate_in_message", "a lone surrogate in a prompt message",
             b'{"prompt": [{"role": "user", "content": "\\udfff"}], "chosen": "3", "rejected": "4"}',
             "invalid_unicode", "prompt[0].content")
    row_case("empty_annotator_id", "annotator_id is an empty string", good(3, annotator_id=""),
             "empty_field", "annotator_id")
    row_case("float_annotator_id", "annotator_id 1.5", good(3, annotator_id=1.5), "wrong_type", "annotator_id")
    row_case("bool_annotator_id", "annotator_id true", good(3, annotator_id=True), "wrong_type", "annotator_id")
    row_case("missing_annotator_id", "one row of six without annotator_id", good(3, annotator_id=...),
             "annotator_id_partial", "annotator_id")
    row_case("stray_annotator_id", "only one row of six has an annotator_id",
             good(3), "annotator_id_partial", "annotator_id", make=lambda i: good(i, annotator_id=...))
    row_case("mixed_type_annotator_ids", 'annotator ids "1" and 1 (one annotator or two?)',
             good(3, annotator_id=1), "annotator_id_ambiguous", "annotator_id",
             make=lambda i: good(i, annotator_id=str(i % 2)))
    row_case("duplicate_pair_id", "two rows with id r1", good(3, id="r1"), "duplicate_id", "id")
    row_case("pair_ids_one_and_1", 'pair ids "1" (line 1) and 1 (line 3) are the same id', good(3, id=1),
             "duplicate_id", "id", make=lambda i: good(i, id=str(i)))
    row_case("content_parts", "message content as a list of parts (multimodal style)",
             good(3, prompt=[{"role": "user", "content": [{"type": "text", "text": "1 + 2 ="}]}]),
             "wrong_type", "prompt[0].content")
    row_case("infinite_number", "chosen is 1e999 (parsed as infinity)",
             b'{"prompt": "1 + 2 =", "chosen": 1e999, "rejected": " 4"}', "wrong_type", "chosen")
    row_case("integer_role", "a message whose role is a number",
             good(3, prompt=[{"role": 1, "content": "1 + 2 ="}]), "wrong_type", "prompt[0].role")
    row_case("message_without_content", "a response message without content",
             good(3, chosen=[{"role": "assistant"}]), "bad_message", "chosen[0].content")
    row_case("message_not_an_object", "a message that is a string",
             good(3, prompt=["1 + 2 ="]), "bad_message", "prompt[0]")
    row_case("empty_message_list", "chosen is an empty list", good(3, chosen=[]), "empty_field", "chosen")
    row_case("unknown_role", "a prompt turn with role 'narrator'",
             good(3, prompt=[{"role": "narrator", "content": "1 + 2 ="}]), "bad_role", "prompt[0].role")
    row_case("single_message_role", "a single prompt message (no list) with an unknown role",
             good(3, prompt={"role": "robot", "content": "1 + 2 ="}), "bad_role", "prompt.role")
    row_case("two_user_turns", "two user turns in a row in the prompt",
             good(3, prompt=[user(), user("2 + 2 =")]), "bad_role", "prompt[1].role")
    row_case("system_not_first", "a system turn after a user turn",
             good(3, prompt=[user(), {"role": "system", "content": "add"}]), "bad_role", "prompt[1].role")
    row_case("prompt_ends_with_assistant", "the prompt's last turn is the assistant's",
             good(3, prompt=[user(), assistant()]), "bad_role", "prompt[1].role")
    row_case("response_starts_with_user", "a response turn with role user",
             good(3, chosen=[user("3")]), "bad_role", "chosen[0].role")
    row_case("tool_without_call", "a tool turn right after the user turn",
             good(3, prompt=[user(), {"role": "tool", "content": "3"}]), "bad_role", "prompt[1].role")
    row_case("message_index_as_in_file", "responses repeat the prompt turn; rejected[2] is a second "
             "assistant turn (index as written, prompt turn included)",
             {"chosen": [user(), assistant("3")], "rejected": [user(), assistant("4"), assistant("5")]},
             "bad_role", "rejected[2].role")
    row_case("conversational_without_template", "a conversational row, tokenizer without chat template",
             conv(3, annotator_id="annotator_0"), "no_chat_template", "prompt")
    row_case("template_mismatch", "a system turn the template renders only after an assistant turn",
             conv(3, system=True), "template_mismatch", "chosen", make=conv, tokenizer="chat_mismatch")
    row_case("template_raises", "a system turn, template raises 'System role not supported'",
             conv(3, system=True), "template_error", "prompt", make=conv, tokenizer="chat_no_system")
    row_case("too_long_dropped", "a row over max_length with truncation=drop",
             good(3, prompt="1 + 2 + 3 + 4 + 5 ="), "too_long", "chosen",
             config={"truncation": "drop", "max_length": 8})
    row_case("mapped_column_missing", "data.columns maps prompt to 'question'; one row lacks it",
             good(3, prompt=...), "missing_field", "question",
             make=lambda i: {**good(i, prompt=...), "question": good(i)["prompt"]},
             config={"columns": {"prompt": "question"}})

    # --- rows that look odd but are fine (nothing skipped)
    every = range(1, ROWS + 1)
    for name, what, content, tokenizer in [
        ("bom", "a UTF-8 byte order mark before line 1", b"\xef\xbb\xbf" + FILES["good.jsonl"], "plain"),
        ("crlf", "Windows line ends", FILES["good.jsonl"].replace(b"\n", b"\r\n"), "plain"),
        ("blank_lines", "blank and whitespace-only lines between rows",
         FILES["good.jsonl"].replace(b"\n", b"\n\n   \n", 2), "plain"),
        ("distinct_mixed_type_ids", "annotator ids 7 and 'w2': distinct, so fine",
         jsonl([good(i, annotator_id=7 if i % 2 else "w2") for i in every]), "plain"),
        ("unknown_columns", "extra columns are ignored",
         jsonl([good(i, score=0.5, meta={"a": [1]}) for i in every]), "plain"),
        ("non_ascii_text", "non-ASCII text (words unknown to this tokenizer)",
         jsonl([good(i, prompt=f"{_sum(i)[0]} \u2603 \u00fc") for i in every]), "plain"),
        ("chat_shapes", "conversational rows in every accepted shape, with a chat template",
         jsonl([conv(1), conv(2, system=True), conv(3, chosen="3", rejected="4"),
                {"chosen": [user(), assistant("3")], "rejected": [user(), assistant("4")]},
                conv(5, prompt=user("5 + 1 ="), chosen=assistant("6"), rejected=assistant("7")),
                {"prompt": "1 + 1 =", "chosen": [assistant("2")], "rejected": "3"}]), "chat"),
        ("tool_turns", "a tool call and its result in the prompt",
         jsonl([conv(i, prompt=[user(), assistant("call"), {"role": "tool", "content": "3"}]) if i == BAD_AT
                else conv(i) for i in every]), "chat"),
    ]:
        case(name, what, ok(ROWS), ok(ROWS), train=f"{name}.jsonl", tokenizer=tokenizer,
             files={f"{name}.jsonl": content})

    # --- JSON documents
    bad_list = [good(i) for i in every]
    bad_list[BAD_AT - 1] = good(BAD_AT, chosen=...)
    case("json_list_bad_row", "a JSON list with a bad element (index 2)",
         err("missing_field", BAD_AT - 1, "chosen", kind="index"), ok(ROWS - 1, missing_field=1),
         train="json_list_bad_row.json", files={"json_list_bad_row.json": json.dumps(bad_list, indent=1).encode()})
    case("json_list_in_jsonl_suffix", "a JSON list in a .jsonl file (detected by content)", ok(ROWS), ok(ROWS),
         train="json_list_in_jsonl_suffix.jsonl",
         files={"json_list_in_jsonl_suffix.jsonl": json.dumps([good(i) for i in every], indent=1).encode()})
    case("jsonl_in_json_suffix", "JSON Lines in a .json file (detected by content)", ok(ROWS), ok(ROWS),
         train="jsonl_in_json_suffix.json", files={"jsonl_in_json_suffix.json": FILES["good.jsonl"]})
    case("json_bom", "a JSON list after a byte order mark", ok(ROWS), ok(ROWS), train="json_bom.json",
         files={"json_bom.json": b"\xef\xbb\xbf" + json.dumps([good(i) for i in range(1, ROWS + 1)]).encode()})
    file_case("json_object_document", "a pretty-printed JSON object (not a list of rows)", "unsupported_format",
              json.dumps({"rows": [good(1)]}, indent=1).encode(), suffix=".json")
    broken = json.dumps([good(i) for i in range(1, ROWS + 1)], indent=1).encode().replace(b'"r2",', b'"r2"', 1)
    line = 11   # "id": "r2" is on line 10; the parser stops at the next key
    case("json_syntax_error", "a JSON list with a missing comma", err("malformed_json", line, None),
         err("malformed_json", line, None), train="json_syntax_error.json", files={"json_syntax_error.json": broken})
    file_case("json_too_deep", "a JSON document nested 5000 lists deep", "nesting_too_deep",
              b"[" * 5000 + b"]" * 5000, suffix=".json")
    file_case("json_duplicate_key", "a JSON list whose object repeats a key", "duplicate_key",
              b'[{"prompt": "1 + 2 =", "prompt": "2 + 2 =", "chosen": " 3", "rejected": " 4"}]', suffix=".json")

    # --- whole files: empty, wrong format, all bad
    file_case("empty", "an empty file", "empty_file", b"")
    file_case("whitespace_only", "only blank lines and spaces", "empty_file", b"\n  \n\t\n")
    file_case("bom_only", "only a byte order mark and a newline", "empty_file", b"\xef\xbb\xbf\n")
    file_case("csv", "a CSV file", "unsupported_format", b"prompt,chosen,rejected\n1 + 2 =,3,4\n", suffix=".csv")
    file_case("gzip", "a gzip-compressed JSONL file", "unsupported_format", b"\x1f\x8b\x08\x00junk",
              suffix=".jsonl.gz")
    case("header_only", "a CSV header line in a .jsonl file", err("malformed_json", 1, None),
         err("no_valid_rows"), train="header_only.jsonl", files={"header_only.jsonl": b"prompt,chosen,rejected\n"})
    case("all_rows_bad", "every row lacks chosen", err("missing_field", 1, "chosen"), err("no_valid_rows"),
         train="all_rows_bad.jsonl", files={"all_rows_bad.jsonl": [good(i, chosen=...) for i in range(1, ROWS + 1)]})
    case("all_conversational_without_template", "only conversational rows, tokenizer without a chat template",
         err("no_chat_template", 1, "prompt"), err("no_valid_rows"), train="all_conversational.jsonl",
         files={"all_conversational.jsonl": [conv(i) for i in range(1, ROWS + 1)]})

    # --- Parquet
    rows = [good(i) for i in range(1, ROWS + 1)]
    case("parquet", "a good Parquet file", ok(ROWS), ok(ROWS), train="parquet.parquet",
         files={"parquet.parquet": _parquet(rows)})
    case("parquet_null_cell", "a Parquet row whose chosen is null",
         err("missing_field", BAD_AT - 1, "chosen", kind="index"), ok(ROWS - 1, missing_field=1),
         train="parquet_null_cell.parquet",
         files={"parquet_null_cell.parquet": _parquet([dict(r, chosen=None) if i == BAD_AT - 1 else r
                                                       for i, r in enumerate(rows)])})
    case("parquet_wrong_types", "Parquet with integer chosen / rejected columns",
         err("wrong_type", 0, "chosen", kind="index"), err("no_valid_rows"), train="parquet_wrong_types.parquet",
         files={"parquet_wrong_types.parquet": _parquet([dict(r, chosen=i, rejected=i + 1)
                                                         for i, r in enumerate(rows)])})
    file_case("parquet_fake", "a text file named .parquet", "unsupported_format", FILES["good.jsonl"],
              suffix=".parquet")
    file_case("parquet_truncated", "a Parquet file cut after 300 bytes", "corrupt_file",
              _parquet(rows, cut=300), suffix=".parquet")

    case("parquet_float_annotator_ids", "annotator ids stored as floats (pandas writes ints with gaps so)",
         err("wrong_type", 0, "annotator_id", kind="index"), err("no_valid_rows"),
         train="parquet_float_ids.parquet",
         files={"parquet_float_ids.parquet": _parquet([dict(r, annotator_id=float(i)) for i, r in enumerate(rows)])})
    case("parquet_bytes_column", "a binary (bytes) chosen column",
         err("wrong_type", 0, "chosen", kind="index"), err("no_valid_rows"), train="parquet_bytes.parquet",
         files={"parquet_bytes.parquet": _parquet([dict(r, chosen=r["chosen"].encode()) for r in rows])})

    def empty_parquet(path):
        import pyarrow as pa
        _parquet([], schema=pa.schema([(k, pa.string()) for k in ("prompt", "chosen", "rejected")]))(path)
    file_case("parquet_no_rows", "a Parquet file with a schema and no rows", "empty_file", empty_parquet,
              suffix=".parquet")

    # --- paths
    FILES["a_folder/pairs.jsonl"] = FILES["good.jsonl"]
    case("folder", "a folder that is no datasets save_to_disk folder", err("unreadable"), err("unreadable"),
         train="a_folder")
    case("missing_file", "a path that does not exist", err("not_found"), err("not_found"),
         train="nosuch/pairs.jsonl")
    case("missing_owner_name", "a missing relative owner/name path whose owner is a local folder (not a hub name)",
         err("not_found"), err("not_found"), train="a_folder/pairs")
    case("symlink_loop", "a symlink loop", err("unreadable"), err("unreadable"), train={"make": "symlink_loop"})
    case("dangling_symlink", "a symlink to a missing file", err("unreadable"), err("unreadable"),
         train={"make": "dangling_symlink"})
    case("hf_disk", "a datasets save_to_disk folder", ok(ROWS), ok(ROWS), train="hf_disk",
         files={"hf_disk": _hf_disk({"train": rows})})
    case("missing_validation_split", "validation from a DatasetDict without a 'validation' split",
         err("split_not_found", split="validation"), err("split_not_found", split="validation"),
         train="hf_disk", validation="hf_disk")

    # --- the tokenizer and the ground truth
    case("tokenizer_missing", "data.tokenizer names a folder that does not exist (no hub download)",
         err("not_found", split="tokenizer"), err("not_found", split="tokenizer"), train="good.jsonl",
         tokenizer="nosuch_tokenizer")
    case("tokenizer_not_a_tokenizer", "data.tokenizer names a folder without tokenizer files",
         err("unreadable", split="tokenizer"), err("unreadable", split="tokenizer"), train="good.jsonl",
         tokenizer="a_folder")
    case("truth_corrupt", "data.truth is not valid JSON", err("corrupt_file", split="truth"),
         err("corrupt_file", split="truth"), train="good.jsonl", config={"truth": "truth_corrupt.json"},
         files={"truth_corrupt.json": b'{"flipped_ids": ["r1",'})
    case("truth_wrong_shape", "data.truth holds flipped_ids as a string", err("corrupt_file", split="truth"),
         err("corrupt_file", split="truth"), train="good.jsonl", config={"truth": "truth_wrong_shape.json"},
         files={"truth_wrong_shape.json": b'{"flipped_ids": "r1"}'})

    # --- splits and settings
    case("fewer_pairs_than_a_batch", "6 valid pairs, global batch 8", err("too_few_pairs"), err("too_few_pairs"),
         train="good.jsonl", global_batch_size=8)
    case("validation_all_bad", "every validation row is bad (must fail before training)",
         err("missing_field", 1, "chosen", split="validation"), err("no_valid_rows", split="validation"),
         train="good.jsonl", validation="validation_all_bad.jsonl",
         files={"validation_all_bad.jsonl": [good(i, chosen=...) for i in range(1, ROWS + 1)]})
    case("validation_empty", "an empty validation file", err("empty_file", split="validation"),
         err("empty_file", split="validation"), train="good.jsonl", validation="empty.jsonl")
    skips = [good(i, chosen=...) if i in (3, 7) else good(i) for i in range(1, 11)]
    case("too_many_skipped", "2 of 10 rows bad, data.max_skipped_fraction=0.1",
         err("missing_field", 3, "chosen"), err("too_many_skipped"), train="two_of_ten_bad.jsonl",
         config={"max_skipped_fraction": 0.1}, files={"two_of_ten_bad.jsonl": skips})
    case("skipped_under_the_limit", "2 of 10 rows bad, data.max_skipped_fraction=0.2 (kept, warned)",
         err("missing_field", 3, "chosen"), ok(8, missing_field=2), train="two_of_ten_bad.jsonl",
         config={"max_skipped_fraction": 0.2})

    # --- precomputed reference columns: ignored unless the run reads them
    half = [good(i, reference_chosen=-1.0, reference_rejected=-2.0) if i % 2 == 0 else good(i)
            for i in range(1, ROWS + 1)]
    case("reference_on_half_the_rows_unused", "reference sums on half the rows, model.reference=model",
         ok(ROWS), ok(ROWS), train="reference_half.jsonl", files={"reference_half.jsonl": half})
    case("reference_on_half_the_rows_used", "reference sums on half the rows, model.reference=precomputed",
         err("reference_partial", 1, "reference_chosen"), ok(ROWS // 2, reference_partial=ROWS // 2),
         train="reference_half.jsonl", reference=True)
    positive = [good(i, reference_chosen=0.5 if i == BAD_AT else -1.0, reference_rejected=-2.0)
                for i in range(1, ROWS + 1)]
    case("positive_reference_unused", "a reference sum > 0, model.reference=model", ok(ROWS), ok(ROWS),
         train="reference_positive.jsonl", files={"reference_positive.jsonl": positive})
    case("positive_reference_used", "a reference sum > 0, model.reference=precomputed",
         err("bad_reference", BAD_AT, "reference_chosen"), ok(ROWS - 1, bad_reference=1),
         train="reference_positive.jsonl", reference=True)


def write_corpus(folder: Path) -> None:
    define_cases()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for relative, content in sorted(FILES.items()):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
    (folder / MANIFEST).write_text(json.dumps({"rows_per_file": ROWS, "templates": TEMPLATES,
                                               "cases": CASES}, indent=1, ensure_ascii=False) + "\n",
                                   encoding="utf-8")


if __name__ == "__main__":
    write_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
    print(f"{len(CASES)} cases, {len(FILES)} files -> {CORPUS if len(sys.argv) == 1 else sys.argv[1]}")
