import os
import pickle

import numpy as np
import pytest

from stformer._files import atomic_path, load_mapping_file, safe_load_pickle, write_json


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"<pad>": _Exploit()}))
    with pytest.raises(ValueError, match="evil.pkl.*refusing to load"):
        safe_load_pickle(path)


def test_restricted_unpickler_accepts_plain_data_and_numeric_numpy_scalars(tmp_path):
    path = tmp_path / "ok.pkl"
    obj = {"a": [1, 2.5, "x"], "b": np.float32(0.25), "c": np.int64(7)}
    path.write_bytes(pickle.dumps(obj))
    loaded = safe_load_pickle(path)
    assert loaded == {"a": [1, 2.5, "x"], "b": 0.25, "c": 7}
    assert type(loaded["b"]) is float and type(loaded["c"]) is int


def test_restricted_unpickler_refuses_object_arrays(tmp_path):
    path = tmp_path / "arr.pkl"
    path.write_bytes(pickle.dumps(np.array([1, 2])))
    with pytest.raises(ValueError, match="refusing"):
        safe_load_pickle(path)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "half").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_refuses_existing_and_replaces_when_asked(tmp_path):
    target = tmp_path / "a.json"
    write_json({"v": 1}, target)
    with pytest.raises(FileExistsError, match="already exists"):
        write_json({"v": 2}, target)
    write_json({"v": 2}, target, overwrite=True)
    assert load_mapping_file(target) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_load_mapping_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_mapping_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_mapping_file(bad)


def test_public_api_imports_lazily_and_completely():
    import subprocess
    import sys

    code = (
        "import sys, stformer; assert 'torch' not in sys.modules; "
        "from stformer.pretrain import STFormerPretrainer, STFormerPreCollator, load_example_lengths, "
        "setup_environment, make_output_dirs, choose_closest, pretrain; "
        "from stformer.classify import GenericClassifier, predict_from_checkpoint; "
        "assert all(getattr(stformer, n) is not None for n in stformer.__all__); print('ok')"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"
