"""The README's quick start runs as written (with tiny epochs), so it cannot drift."""

import os
import re
import warnings

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def quick_start():
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## Quick start"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("\n```", start)]


def test_quick_start_runs_as_pasted(capsys):
    code = quick_start()
    assert "keras_mgr.wrap(backbone, gan.generator)" in code
    shrunk, count = re.subn(r"epochs=\d+", "epochs=1", code)
    assert count == 2  # the GAN's and the classifier's: nothing else is changed
    namespace = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(shrunk, "README.md quick start", "exec"), namespace)
    assert not [w for w in caught if "shuffle" in str(w.message)], "Keras's shuffle warning"
    out = capsys.readouterr().out
    assert "'accuracy':" in out and "'loss':" in out
    assert namespace["model"].mode == "mgr"
