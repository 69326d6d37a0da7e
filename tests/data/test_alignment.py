"""Two tokenizations of one text: the bytes each token stands for, byte spans, aligned predictions, the shared-token
map, and the data module's cross-tokenizer batches — with tokenizers in the styles users bring (byte-level BPE of
GPT-2/Qwen/Llama 3, SentencePiece-style ``▁`` with a dummy prefix and ``<s>``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from lightning_kd.data.alignment import TokenSpans, align_texts, aligned_pairs, token_spans  # noqa: E402
from lightning_kd.data.text import PackedTextDataModule  # noqa: E402
from lightning_kd.data.token_bytes import (  # noqa: E402
    byte_scheme,
    cached_vocab_map,
    shared_vocab_map,
    token_byte_strings,
)
from tests.lm_families import family_tokenizer, metaspace_tokenizer  # noqa: E402

TEXT = 'def café(x):\n    return "naïve 🙂"  # über\n'


def spans(starts: list[int], ends: list[int]) -> TokenSpans:
    return TokenSpans(np.arange(len(starts)), np.array(starts), np.array(ends))


# --- hand-worked alignments --------------------------------------------------------------------------------------
def test_one_to_two_two_to_one_and_two_to_three_splits_align_at_their_common_starts():
    # text "abcdefghij": the student cuts it ab|c|de|fgh|ij, the teacher abc|d|e|f|g|hij
    s = spans([0, 2, 3, 5, 8], [2, 3, 5, 8, 10])
    t = spans([0, 3, 4, 5, 6, 7], [3, 4, 5, 6, 7, 10])
    i, j = aligned_pairs(s, t)
    # common token starts: byte 0 (both), 3 (student "de" / teacher "d": 2:1 after a 2:1 "ab c" vs "abc"),
    # 5 (student "fgh" / teacher "f"); 8 starts no teacher token (inside "hij")
    assert i.tolist() == [0, 2, 3] and j.tolist() == [0, 1, 3]
    # a 2:3 word: student "wo|rds" vs teacher "w|or|ds" share only the word's start and the next word
    s2, t2 = spans([0, 2, 5], [2, 5, 6]), spans([0, 1, 3, 5], [1, 3, 5, 6])
    assert [x.tolist() for x in aligned_pairs(s2, t2)] == [[0, 2], [0, 3]]


def test_zero_width_tokens_never_align():
    s = spans([0, 0, 3], [0, 3, 5])  # <s> then "abc" "de"
    t = spans([0, 3], [3, 5])
    assert [x.tolist() for x in aligned_pairs(s, t)] == [[1, 2], [0, 1]]


# --- what tokens stand for --------------------------------------------------------------------------------------
def test_token_bytes_undo_each_vocabulary_scheme(tmp_path):
    byte_level = family_tokenizer("qwen", tmp_path / "c")
    meta = metaspace_tokenizer(tmp_path / "c")
    assert byte_scheme(byte_level) == "byte_level" and byte_scheme(meta) == "metaspace"
    bl = token_byte_strings(byte_level)
    assert bl[byte_level.convert_tokens_to_ids("Ġ")] == b" " and bl[byte_level.convert_tokens_to_ids("Ċ")] == b"\n"
    assert bl[byte_level.eos_token_id] is None  # special: stands for no text
    ms = token_byte_strings(meta)
    piece = next(t for t in meta.get_vocab() if t.startswith("\u2581") and len(t) > 2)
    assert ms[meta.convert_tokens_to_ids(piece)] == (" " + piece[1:]).encode()
    assert ms[meta.bos_token_id] is None and ms[meta.unk_token_id] is None


def test_spans_cover_the_text_exactly_in_every_style(tmp_path):
    size = len(TEXT.encode())
    for tok in (family_tokenizer("qwen", tmp_path / "c"), family_tokenizer("llama3", tmp_path / "c"),
                metaspace_tokenizer(tmp_path / "c")):  # fmt: skip
        ids = list(tok(TEXT)["input_ids"]) + [tok.eos_token_id]
        prefix = 1 if tok.bos_token_id is not None and ids[0] == tok.bos_token_id else 0
        sp = token_spans(tok, [TEXT], [ids], prefix)
        assert sp.offset_fallbacks == 0  # every token spells its text: no <unk>, no normalisation
        assert sp.ends[-2] == size and sp.ends[-1] == size + 1  # the text, then EOS's one virtual byte
        assert (sp.starts[1:] == sp.ends[:-1]).all() and (sp.ends >= sp.starts).all()
        if prefix:
            assert sp.ends[0] == 0  # BOS takes no bytes
        # each token's span is the text its id decodes to (multi-byte characters cut inside stay bytes)
        raw = TEXT.encode()
        for k in range(prefix, len(ids) - 1):
            got = token_byte_strings(tok)[ids[k]]
            if k == prefix and byte_scheme(tok) == "metaspace":
                got = got[1:]  # the dummy prefix space stands for no text
            if got is not None:
                assert raw[sp.starts[k] : sp.ends[k]] == got


def test_a_tokenizer_whose_tokens_do_not_spell_the_text_falls_back_to_its_offsets(tmp_path):
    tok = metaspace_tokenizer(tmp_path / "c", lowercase=True)  # lower-cases: "Café" is spelt "café"
    text = "Café Über\n"
    ids = list(tok(text)["input_ids"]) + [tok.eos_token_id]
    sp = token_spans(tok, [text], [ids], 1)
    assert sp.offset_fallbacks == 1 and sp.ends[-2] == len(text.encode())


def test_aligned_predictions_see_the_same_text_and_predict_from_the_same_byte(tmp_path):
    student, teacher = family_tokenizer("qwen", tmp_path / "c", 300), metaspace_tokenizer(tmp_path / "c", 400)
    pairs, (s_ids, t_ids) = align_texts(student, teacher, TEXT)
    assert len(pairs) >= 5
    for sp, tp in pairs:  # the text before each side's next token, decoded by the tokenizers themselves
        assert student.decode(s_ids[: sp + 1]) == teacher.decode(t_ids[: tp + 1]).lstrip(" ") or "�" in TEXT


def test_identical_tokenizers_align_every_position(tmp_path):
    tok = family_tokenizer("gpt2", tmp_path / "c")
    pairs, (ids, _) = align_texts(tok, tok, TEXT)
    assert pairs == [(k, k) for k in range(len(ids) - 1)]


# --- the shared-token map ---------------------------------------------------------------------------------------
def test_vocab_map_matches_bytes_across_schemes_and_specials_by_role(tmp_path):
    student, teacher = family_tokenizer("llama3", tmp_path / "c"), metaspace_tokenizer(tmp_path / "c")
    vm = shared_vocab_map(student, teacher)
    assert vm.shape == (len(teacher),)
    s_bytes, t_bytes = token_byte_strings(student), token_byte_strings(teacher)
    mapped = np.flatnonzero(vm >= 0)
    assert len(mapped) > 100
    for t_id in mapped:
        if t_bytes[t_id] is not None:
            assert s_bytes[vm[t_id]] == t_bytes[t_id]
    assert vm[teacher.eos_token_id] == student.eos_token_id and vm[teacher.bos_token_id] == student.bos_token_id
    assert len(set(vm[mapped].tolist())) == len(mapped)  # one-to-one
    same = shared_vocab_map(student, student)
    assert (same == np.arange(len(student))).all()


def test_vocab_map_is_cached_by_both_fingerprints_and_a_foreign_file_is_not_overwritten(tmp_path):
    student, teacher = family_tokenizer("qwen", tmp_path / "c"), metaspace_tokenizer(tmp_path / "c")
    first = cached_vocab_map(student, teacher, tmp_path / "cache")
    (path,) = (tmp_path / "cache").glob("vocab-map-*.npy")
    assert (cached_vocab_map(student, teacher, tmp_path / "cache") == first).all()
    np.save(path, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="not overwritten"):
        cached_vocab_map(student, teacher, tmp_path / "cache")
    assert np.load(path).shape == (3,)


# --- the data module --------------------------------------------------------------------------------------------
def test_cross_tokenizer_batches_carry_both_tokenizations_and_the_alignment(tmp_path, corpus_dir):
    student, teacher = family_tokenizer("qwen", tmp_path / "c", 300), metaspace_tokenizer(tmp_path / "c", 400)
    dm = PackedTextDataModule(
        text_dir=str(corpus_dir), pattern="*.py", tokenizer=student, teacher_tokenizer=teacher, seq_len=32,
        batch_size=4, cache_dir=str(tmp_path / "cache"), val_fraction=0.2,
    )  # fmt: skip
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "teacher_input_ids", "teacher_attention_mask",
                          "align", "token_bytes"}  # fmt: skip
    assert batch["input_ids"].shape == batch["token_bytes"].shape == (4, 32)
    assert batch["align"].shape[:2] == (4, 2) and 0.3 < dm.stats["train_aligned"] <= 1.0
    for row in range(4):
        s_ids, t_ids = batch["input_ids"][row].tolist(), batch["teacher_input_ids"][row]
        t_ids = t_ids[batch["teacher_attention_mask"][row] == 1].tolist()
        a = batch["align"][row]
        s_bytes, t_bytes = token_byte_strings(student), token_byte_strings(teacher)
        offsets = set()
        for sp, tp in zip(a[0][a[0] >= 0].tolist(), a[1][a[1] >= 0].tolist()):
            # the same next piece of text: the text before it, decoded by each tokenizer, differs only by where the
            # teacher's slice starts (a fixed number of bytes into the row) ...
            s_text = student.decode(s_ids[: sp + 1], skip_special_tokens=True)
            t_text = teacher.decode(t_ids[: tp + 1], skip_special_tokens=True)
            assert s_text.endswith(t_text.lstrip(" ")[-20:])
            documents = s_ids[: sp + 1].count(student.eos_token_id)  # the teacher decodes a dummy space per document
            if t_text.strip():  # (a decoder drops the first "▁" of a slice: all-space prefixes are not compared)
                offsets.add((documents, len(s_text.encode()) - len(t_text.lstrip(" ").encode())))
            # ... and both next tokens start with the same byte
            s_next, t_next = s_bytes[s_ids[sp + 1]], t_bytes[t_ids[tp + 1]]
            if s_next is not None and t_next is not None:
                assert s_next[:1] == t_next[:1]
        # one shift per document of the row: every pair sits at the same text position on both sides
        assert len(offsets) == len({d for d, _ in offsets})
        text_bytes = batch["token_bytes"][row].sum().item()
        assert text_bytes == len(student.decode(s_ids).encode()) + s_ids.count(student.eos_token_id) * (
            1 - len(student.decode([student.eos_token_id]).encode())
        )


def test_identical_tokenizers_give_the_identity_alignment(tmp_path, corpus_dir):
    tok = family_tokenizer("gpt2", tmp_path / "c")
    dm = PackedTextDataModule(
        text_dir=str(corpus_dir), pattern="*.py", tokenizer=tok, teacher_tokenizer=tok, seq_len=16, batch_size=2,
        cache_dir=str(tmp_path / "cache"), val_fraction=0.2,
    )  # fmt: skip
    dm.setup()
    batch = dm.splits["train"].__getitems__([0, 1])
    assert (batch["teacher_input_ids"] == batch["input_ids"]).all()
    assert (batch["align"][:, 0] == batch["align"][:, 1]).all()
    assert batch["align"][0, 0].tolist() == list(range(15))


def test_teacher_tokenizer_and_its_bpe_size_are_exclusive(tmp_path, corpus_dir):
    with pytest.raises(ValueError, match="not both"):
        PackedTextDataModule(text_dir=str(corpus_dir), teacher_tokenizer="x", teacher_bpe_vocab_size=300)


def test_first_piece_map_gives_each_unshared_teacher_token_the_students_own_first_token_of_its_text(tmp_path):
    from lightning_kd.data.token_bytes import first_piece_map

    student, teacher = family_tokenizer("qwen", tmp_path / "c", 280), family_tokenizer("qwen", tmp_path / "c", 420)
    exact, first = shared_vocab_map(student, teacher), first_piece_map(student, teacher)
    t_bytes = token_byte_strings(teacher)
    assert ((exact >= 0) <= (first >= 0)).all() and (first[exact >= 0] == exact[exact >= 0]).all()
    added = np.flatnonzero((first >= 0) & (exact < 0))
    assert len(added) > 50  # the larger vocabulary's longer merges
    for t_id in added:
        text = t_bytes[t_id].decode()
        # what the student itself predicts first when the text continues with this teacher token's text
        assert first[t_id] == student(text, add_special_tokens=False)["input_ids"][0]
    # a SentencePiece-style student adds its own leading space: asked for " return" it is given "return"
    from tests.lm_families import llama2_tokenizer

    sp = llama2_tokenizer(tmp_path / "c")
    to_sp = first_piece_map(sp, teacher)
    spaced = [i for i in np.flatnonzero(exact < 0) if (t_bytes[i] or b"").startswith(b" ") and len(t_bytes[i]) > 2]
    for t_id in spaced[:20]:
        assert to_sp[t_id] == sp(t_bytes[t_id].decode()[1:], add_special_tokens=False)["input_ids"][0]
        assert token_byte_strings(sp)[to_sp[t_id]].startswith(b" ")


def test_the_layout_llama2_and_mistral_ship_is_read_byte_fallback_included(tmp_path):
    from tests.lm_families import llama2_tokenizer

    tok = llama2_tokenizer(tmp_path / "c")  # Prepend/Replace normalizer, <0x00>..<0xFF> at ids 3-258
    assert byte_scheme(tok) == "metaspace"
    strings = token_byte_strings(tok)
    assert strings[tok.convert_tokens_to_ids("\u2581")] == b" " and strings[tok.convert_tokens_to_ids("<0x2C>")] == b","
    text = "x = 'ß€' , 12\n"  # ß and € are not in its pieces: byte-fallback tokens spell them
    ids = list(tok(text)["input_ids"]) + [tok.eos_token_id]
    assert "<0xC3>" in tok.convert_ids_to_tokens(ids)
    sp = token_spans(tok, [text], [ids], 1)
    assert sp.offset_fallbacks == 0 and sp.ends[-2] == len(text.encode())
    assert sp.unaligned.tolist() == [False, True] + [False] * (len(ids) - 2)  # "▁x" carries the dummy space
    assert (shared_vocab_map(tok, tok) == np.arange(len(tok))).all()  # identical tokenizers: the identity
    student = family_tokenizer("qwen", tmp_path / "c")
    vm = shared_vocab_map(student, tok)
    comma = student.convert_tokens_to_ids(",")
    assert vm[tok.convert_tokens_to_ids(",")] == comma and vm[tok.convert_tokens_to_ids("<0x2C>")] == -1
    assert vm[tok.convert_tokens_to_ids("\u2581")] == student.convert_tokens_to_ids("Ġ")


def test_a_dummy_prefix_token_is_never_aligned(tmp_path):
    from lightning_kd.data.text_tokenizer import encode_texts
    from tests.lm_families import llama2_tokenizer

    student, teacher = family_tokenizer("qwen", tmp_path / "c"), llama2_tokenizer(tmp_path / "c")
    texts = ["a = 1\n", "def f(x):\n    return x\n"]
    s = token_spans(student, texts, encode_texts(student, texts), 0)
    t = token_spans(teacher, texts, encode_texts(teacher, texts), 1)
    second = len(texts[0].encode()) + 1  # the second document's first byte
    (first_t,) = np.flatnonzero((t.starts == second) & (t.ends > t.starts))
    assert teacher.convert_ids_to_tokens(int(t.ids[first_t])).startswith("\u2581") and t.unaligned[first_t]
    i, j = aligned_pairs(s, t)
    assert second not in t.starts[j]  # "▁def" means " def": it is not the student's "def" there
    assert len(i) >= 5 and (s.starts[i] == t.starts[j]).all()
