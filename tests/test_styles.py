"""styles.csv: A1111's format, merge rules, atomic saves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modules.styles import PromptStyle, StyleDatabase, UnknownStyleError, merge_prompts


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_merge_appends_with_comma_or_fills_placeholder():
    assert merge_prompts("masterpiece", "a cat") == "a cat, masterpiece"
    assert merge_prompts("masterpiece", "  ") == "masterpiece"
    assert merge_prompts("", "a cat") == "a cat"
    assert merge_prompts("photo of {prompt}, 4k", "a cat") == "photo of a cat, 4k"
    assert merge_prompts("{prompt} and {prompt}", "x") == "x and x"


def test_reads_a1111_file_with_quotes_multiline_and_bom(tmp_path):
    path = write(tmp_path / "styles.csv",
                 "\ufeffname,prompt,negative_prompt\n"
                 "None,,\n"
                 'Cinematic,"cinematic, {prompt}, film grain","blurry, ugly"\n'
                 '"Multi line","a\nb",\n'
                 "Plain,sharp,\n")
    db = StyleDatabase(path)
    assert db.names() == ["Cinematic", "Multi line", "Plain"]
    assert db.get("Cinematic") == PromptStyle("Cinematic", "cinematic, {prompt}, film grain", "blurry, ugly")
    assert db.get("Multi line").prompt == "a\nb"
    prompt, negative = db.apply("a dog", "lowres", ["Cinematic", "Plain"])
    assert prompt == "cinematic, a dog, film grain, sharp"
    assert negative == "lowres, blurry, ugly"


def test_old_text_column_and_missing_file(tmp_path):
    assert StyleDatabase(tmp_path / "absent.csv").names() == []
    path = write(tmp_path / "old.csv", "name,text\nOld,vintage\n")
    assert StyleDatabase(path).get("Old").prompt == "vintage"


def test_unknown_style_names_the_known_ones(tmp_path):
    db = StyleDatabase(write(tmp_path / "s.csv", "name,prompt,negative_prompt\nA,a,\n"))
    with pytest.raises(UnknownStyleError, match="'B'.*'A'"):
        db.apply("x", "", ["B"])


def test_save_round_trips_and_replaces_in_place(tmp_path):
    path = tmp_path / "styles.csv"
    db = StyleDatabase(path)
    db.save_style(PromptStyle("First", 'a "quoted", {prompt}', "neg\nline"))
    db.save_style(PromptStyle("Second", "b", ""))
    db.save_style(PromptStyle("First", "new", "n"))
    assert path.read_text(encoding="utf-8").splitlines()[0] == "name,prompt,negative_prompt"
    again = StyleDatabase(path)
    assert again.names() == ["First", "Second"]
    assert again.get("First") == PromptStyle("First", "new", "n")
    again.delete_style("Second")
    assert StyleDatabase(path).names() == ["First"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_special_characters_survive(tmp_path):
    path = tmp_path / "styles.csv"
    style = PromptStyle("Ünïcode, comma", 'say "hi", {prompt}\nnext', "a,b")
    StyleDatabase(path).save_style(style)
    assert StyleDatabase(path).get("Ünïcode, comma") == style


def test_bad_names_rejected(tmp_path):
    db = StyleDatabase(tmp_path / "s.csv")
    with pytest.raises(ValueError, match="name"):
        db.save_style(PromptStyle("  "))
    with pytest.raises(ValueError, match="None"):
        db.save_style(PromptStyle("None", "x"))


def test_external_edits_are_picked_up(tmp_path):
    path = write(tmp_path / "s.csv", "name,prompt,negative_prompt\nA,a,\n")
    db = StyleDatabase(path)
    assert db.names() == ["A"]
    write(path, "name,prompt,negative_prompt\nA,a,\nB,b,\n")
    os.utime(path, ns=(1, 1))  # make sure the change is visible even on coarse clocks
    assert db.names() == ["A", "B"]


def test_module_is_torch_free():
    code = "import sys, modules.styles, modules.ui_config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
