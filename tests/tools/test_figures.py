"""The docs' figures: the registry, the markers, the blocks and the command (tools/figures.py, outside the package)."""

import re
import shlex
import shutil
import sys

import pytest

from jaxtrain import compare, config
from jaxtrain.cli import commands as cli

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import figures  # noqa: E402 (tools/ is not a package)
from figures import FIGURES  # noqa: E402


@pytest.fixture
def docs(tmp_path):
    """A copy of the documents that hold figures, laid out as in the repository."""
    for doc in figures.DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / doc, tmp_path / doc)
    return tmp_path


@pytest.mark.quick
def test_every_figure_has_its_markers_once_in_its_document_and_every_marker_a_figure():
    figures.check_markers(ROOT)
    for doc in figures.DOCS:
        text = (ROOT / doc).read_text()
        names = re.findall(r"^<!-- /?figure: (\S+) -->$", text, re.M)
        mine = [name for name, figure in FIGURES.items() if figure.doc == doc]
        assert sorted(names) == sorted(mine * 2), doc
        for name in mine:
            opening, closing = f"<!-- figure: {name} -->\n", f"<!-- /figure: {name} -->\n"
            assert text.count(opening) == text.count(closing) == 1
            assert text.index(opening) < text.index(closing)


@pytest.mark.quick
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t + "\n<!-- figure: nope -->\n<!-- /figure: nope -->\n", "figure 'nope', which is not registered"),
        (lambda t: t.replace("<!-- figure: primer -->\n", "").replace("<!-- /figure: primer -->\n", ""),
         "figure 'primer' has no markers in README.md"),
        (lambda t: t.replace("<!-- /figure: primer -->\n", ""), "<!-- figure: primer --> is never closed"),
        (lambda t: t.replace("<!-- /figure: primer -->\n", "<!-- figure: bench -->\n<!-- /figure: primer -->\n"),
         "figure 'bench' opens inside 'primer'"),
        (lambda t: t + "\n<!-- figure: primer -->\n<!-- /figure: primer -->\n", "figure 'primer' a second time"),
        (lambda t: t + "\n<!-- figure: bench -->\n<!-- /figure: bench -->\n", "expected it in docs/paradigms.md"),
    ],
)
def test_markers_that_disagree_with_the_registry_are_one_line_errors(docs, edit, message):
    readme = docs / "README.md"
    readme.write_text(edit(readme.read_text()))
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        figures.check_markers(docs)
    assert "\n" not in str(error.value)


@pytest.mark.quick
def test_replacing_a_block_leaves_every_byte_outside_its_markers_alone():
    before = "# Title\n\nText.\n<!-- figure: a -->\nold\n\ntable\n<!-- /figure: a -->\nAfter, no newline at the end"
    text = figures.replace_block(before, "a", "new block\n\n| x |")
    assert text == "# Title\n\nText.\n<!-- figure: a -->\n\nnew block\n\n| x |\n\n<!-- /figure: a -->\nAfter, no newline at the end"
    assert figures.replace_block(text, "a", "new block\n\n| x |") == text  # twice: the same
    with pytest.raises(ValueError, match="figure 'b': 0 marked blocks"):
        figures.replace_block(before, "b", "x")


def test_replacing_a_block_of_the_readme_changes_nothing_else():
    original = (ROOT / "README.md").read_text()
    text = figures.replace_block(original, "primer", "Generated.\n\n| a |\n| --- |")
    head, tail = original.split("<!-- figure: primer -->\n")[0], original.split("<!-- /figure: primer -->\n")[1]
    assert text.startswith(head + "<!-- figure: primer -->\n\nGenerated.\n\n| a |\n| --- |\n\n<!-- /figure: primer -->\n")
    assert text.endswith("<!-- /figure: primer -->\n" + tail)
    assert len(text) == len(head) + len(tail) + len("<!-- figure: primer -->\n\nGenerated.\n\n| a |\n| --- |\n\n<!-- /figure: primer -->\n")


@pytest.mark.quick
@pytest.mark.parametrize("quick", [False, True])
def test_every_command_is_one_the_command_line_takes(quick):
    parser = cli.parser()
    for name, figure in FIGURES.items():
        for command in figure.commands:
            argv = figures.words(command, "mnist-dir", quick=quick)
            assert argv[:3] == ["python", "-m", "jaxtrain"], command
            args = parser.parse_args(argv[3:])
            if quick:
                assert "--data-dir" not in argv and "mnist" not in argv
                for flag, most in figures.QUICK.items():
                    assert flag not in argv or int(argv[argv.index(flag) + 1]) <= most
            if args.command == "train":
                config.Config(**{k: v for k, v in vars(args).items() if k in config.Config.__dataclass_fields__})
            elif getattr(args, "study", None) == "parity":
                compare.ParityConfig(**{k: v for k, v in vars(args).items() if k in compare.ParityConfig.__dataclass_fields__})
            elif getattr(args, "study", None) == "bench":
                setup = config.Config(**{k: v for k, v in vars(args).items() if k in config.Config.__dataclass_fields__})
                compare.bench_check(setup, args.models, args.programs or compare.PRESETS[args.preset])
            else:
                assert args.command == "plot", command


@pytest.mark.quick
def test_the_rows_of_a_figure_share_its_start():
    for name, figure in FIGURES.items():
        assert len(set(figure.commands)) == len(figure.commands), name
        if figure.common:
            assert all(shlex.split(command)[: len(shlex.split(figure.common))] == shlex.split(figure.common)
                       for command in figure.commands)


@pytest.mark.quick
def test_an_unknown_figure_is_one_line_naming_them_all_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit:
        figures.main(["--only", "primer", "nope"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'nope'" in err
    assert all(name in err for name in FIGURES)


@pytest.mark.quick
def test_figures_on_mnist_without_its_folder_are_refused_before_any_work(capsys, monkeypatch):
    monkeypatch.setattr(figures, "measure_in_child", lambda *a, **k: pytest.fail("work started"))
    assert figures.main(["--only", "primer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tools/figures.py: error: data dir None (--data-dir): expected MNIST's IDX folder")
    assert len(err.strip().splitlines()) == 1
    assert figures.main(["--quick", "--data-dir", "x"]) == 2
    assert "none with --quick" in capsys.readouterr().err


@pytest.mark.quick
def test_list_names_each_figure_with_its_commands(capsys):
    assert figures.main(["--list", "--only", "primer", "bench", "--data-dir", "../mnist"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "primer (README.md, about 0.5 minutes)"
    assert "  python -m jaxtrain train --dataset mnist --data-dir ../mnist --epochs 10" in out
    assert "--plot docs/compare_bench.png" in out and out.splitlines()[-1].startswith("2 figures, about 4.5 minutes")


@pytest.mark.quick
def test_the_batch_size_picture_is_drawn_from_a_sweep(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"model": m, "program": p, "batch_size": b, "samples_per_second": 1000.0 * b / (1 + i)}
            for m in ("mlp", "cnn") for i, p in enumerate(("pytorch-dataloader", "jaxtrain")) for b in (32, 128, 512)]
    compare.plot_batch_sizes({"rows": rows}, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_primer_figure_runs_end_to_end_into_a_copy_of_the_readme(docs):
    before = {doc: (docs / doc).read_text() for doc in figures.DOCS}
    blocks = figures.generate(["primer"], quick=True, root=docs)
    readme = (docs / "README.md").read_text()
    head, rest = before["README.md"].split("<!-- figure: primer -->\n")
    tail = rest.split("<!-- /figure: primer -->\n")[1]
    assert readme == f"{head}<!-- figure: primer -->\n\n{blocks['primer']}\n\n<!-- /figure: primer -->\n{tail}"
    assert (docs / "docs/paradigms.md").read_text() == before["docs/paradigms.md"]
    header, table, note = blocks["primer"].split("\n\n")
    assert header.startswith("Generated on ") and "`python tools/figures.py --only primer --quick`" in header
    assert "`python -m jaxtrain train --dataset digits`, then `python -m jaxtrain train --dataset digits --epochs 2" in header
    assert " CPUs), " in header and "jax " in header and "\n" not in header
    rows = table.splitlines()[2:]
    assert len(rows) == 2 and all("| 1,348 / 449 |" in row for row in rows)
    accuracies = [float(re.search(r"\| ([\d.]+)% \|", row).group(1)) for row in rows]
    assert all(50 < accuracy <= 100 for accuracy in accuracies)  # it trained
    assert note.startswith("samples/s:")
