"""Structurally wrong checkpoint files and bad load() arguments: one ValueError naming the file, the key,
what was expected, what arrived and the fix -- never AttributeError, TypeError, ZeroDivisionError or a bare
JSONDecodeError (issue 11)."""

import json
import shutil
from pathlib import Path

import pytest

import qkv.models
from qkv.models.tokenizer import Tokenizer

# config.json of each family with every key qkv reads; no weights, so a valid config ends at "no weights in".
CONFIGS = {
    "bert": {
        "model_type": "bert",
        "hidden_size": 32,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": 50,
        "max_position_embeddings": 16,
        "intermediate_size": 64,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": 0,
    },
    "gpt2": {
        "model_type": "gpt2",
        "n_embd": 16,
        "n_head": 2,
        "n_layer": 1,
        "vocab_size": 20,
        "n_positions": 8,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
    "llama": {
        "model_type": "llama",
        "hidden_size": 16,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 1,
        "vocab_size": 20,
        "intermediate_size": 32,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "eos_token_id": [1, 2],
    },
}


def write_config(path: Path, family: str, **changes) -> Path:
    raw = {**CONFIGS[family], **changes}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(raw))
    return path


def load_error(path) -> str:
    with pytest.raises(ValueError) as e:
        qkv.models.load(path)
    return str(e.value)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_valid_configs_pass_the_checks(tmp_path, family):
    """The baseline of every case below: the unbroken config is read, and loading stops only for the weights."""
    assert "no weights in" in load_error(write_config(tmp_path, family))


@pytest.mark.parametrize("top", [[{"model_type": "bert"}], "bert", 7, None])
def test_config_json_that_is_not_an_object(tmp_path, top):
    tmp_path.joinpath("config.json").write_text(json.dumps(top))
    msg = load_error(tmp_path)
    assert str(tmp_path / "config.json") in msg and "expected a JSON object" in msg
    assert "restore the model's original config.json" in msg


WRONG_TYPES = [  # (family, key, value, what the message says was expected, what it says arrived)
    ("bert", "hidden_size", "32", "an integer >= 1", "the string '32'"),
    ("bert", "num_attention_heads", "four", "an integer >= 1", "the string 'four'"),
    ("bert", "vocab_size", [50], "an integer >= 1", "a list of 1 item(s)"),
    ("bert", "max_position_embeddings", {"n": 16}, "an integer >= 1", "an object with keys ['n']"),
    ("bert", "num_hidden_layers", 2.5, "an integer >= 1", "the number 2.5"),
    ("bert", "intermediate_size", True, "an integer >= 1", "the boolean true"),
    ("bert", "layer_norm_eps", "1e-12", "a positive finite number", "the string '1e-12'"),
    ("bert", "hidden_act", ["gelu"], "a string", "a list of 1 item(s)"),
    ("bert", "pad_token_id", "0", "a token id", "the string '0'"),
    ("bert", "model_type", ["bert"], "a string", "a list of 1 item(s)"),
    ("bert", "type_vocab_size", "2", "an integer >= 0", "the string '2'"),
    ("gpt2", "n_embd", "16", "an integer >= 1", "the string '16'"),
    ("gpt2", "n_positions", "8", "an integer >= 1", "the string '8'"),
    ("gpt2", "activation_function", 3, "a string", "the number 3"),
    ("gpt2", "eos_token_id", ["0"], "a token id", "a list of 1 item(s)"),
    ("gpt2", "scale_attn_by_inverse_layer_idx", "yes", "true or false", "the string 'yes'"),
    ("llama", "num_key_value_heads", "2", "an integer >= 1", "the string '2'"),
    ("llama", "rope_theta", "1e4", "a positive finite number", "the string '1e4'"),
    ("llama", "rope_scaling", ["linear", 2.0], "a JSON object", "a list of 2 item(s)"),
    ("llama", "tie_word_embeddings", "false", "true or false", "the string 'false'"),
    ("llama", "head_dim", "4", "an integer >= 1", "the string '4'"),
]


@pytest.mark.parametrize("family, key, value, expected, arrived", WRONG_TYPES)
def test_wrong_json_type_for_a_key(tmp_path, family, key, value, expected, arrived):
    msg = load_error(write_config(tmp_path, family, **{key: value}))
    assert msg.startswith(f"{tmp_path / 'config.json'}: {key!r} must be {expected}"), msg
    assert f"got {arrived}" in msg
    assert "restore the value" in msg or "without quotes" in msg


def test_a_quoted_number_gets_the_unquoted_fix(tmp_path):
    msg = load_error(write_config(tmp_path, "bert", hidden_size="32"))
    assert 'write it as a JSON number without quotes ("hidden_size": 32)' in msg


BAD_SIZES = [
    ("bert", "num_attention_heads", 0),
    ("bert", "num_hidden_layers", 0),
    ("bert", "hidden_size", -32),
    ("bert", "vocab_size", -1),
    ("bert", "intermediate_size", -64),
    ("bert", "max_position_embeddings", 0),
    ("bert", "type_vocab_size", -1),
    ("bert", "pad_token_id", -1),
    ("bert", "layer_norm_eps", -1e-12),
    ("gpt2", "n_head", 0),
    ("gpt2", "n_layer", 0),
    ("gpt2", "n_embd", -16),
    ("gpt2", "n_positions", -8),
    ("llama", "num_attention_heads", 0),
    ("llama", "num_key_value_heads", 0),
    ("llama", "num_hidden_layers", -1),
    ("llama", "head_dim", 0),
    ("llama", "rms_norm_eps", 0),
    ("llama", "eos_token_id", [1, -2]),
]


@pytest.mark.parametrize("family, key, value", BAD_SIZES)
def test_zero_or_negative_sizes(tmp_path, family, key, value):
    msg = load_error(write_config(tmp_path, family, **{key: value}))
    assert msg.startswith(f"{tmp_path / 'config.json'}: {key!r} must be "), msg
    assert f"got the number {value!r}" in msg or "got a list" in msg
    assert "restore the value from the model's original config.json" in msg


@pytest.mark.parametrize(
    "family, changes",
    [
        ("bert", {"hidden_size": 32, "num_attention_heads": 5}),
        ("gpt2", {"n_embd": 30, "n_head": 4}),
        ("llama", {"hidden_size": 30, "num_attention_heads": 4, "num_key_value_heads": 4}),
    ],
)
def test_hidden_size_not_divisible_by_heads(tmp_path, family, changes):
    msg = load_error(write_config(tmp_path, family, **changes))
    assert msg.startswith(f"{tmp_path / 'config.json'}: ") and "is not divisible by" in msg, msg
    assert "restore both values from the model's original config.json" in msg


def test_llama_with_explicit_head_dim_need_not_divide(tmp_path):
    """hidden 30 with 4 heads of head_dim 8 is a legal (projected) Llama shape: the checks let it through."""
    path = write_config(tmp_path, "llama", hidden_size=30, num_attention_heads=4, num_key_value_heads=4, head_dim=8)
    assert "no weights in" in load_error(path)


@pytest.mark.parametrize("arg", [None, 42, 3.5, ["minilm"], {"model": "minilm"}])
def test_load_with_an_argument_that_is_no_name_or_path(arg):
    with pytest.raises(
        ValueError,
        match=r"expected a model name \(str\) or a checkpoint directory \(path\), got "
        + type(arg).__name__
        + r".*pass 'minilm', a directory",
    ):
        qkv.models.load(arg)


@pytest.mark.parametrize("name", ["", "   "])
def test_load_with_an_empty_name(name):
    """'' used to resolve to the current directory."""
    with pytest.raises(ValueError, match=r"the model name is empty; pass 'minilm'"):
        qkv.models.load(name)


# ------------------------------------------------------------------ sentence-transformers files, index, tokenizer
@pytest.fixture
def st_dir(tmp_path):
    """A BERT config with a valid sentence-transformers pooling set-up (mean + normalize)."""
    path = write_config(tmp_path / "st", "bert")
    (path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
    )
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return path


def test_valid_pooling_is_read(st_dir):
    from qkv.models.loading import read_config

    cfg, _ = read_config(st_dir, "st")
    assert (cfg.pooling, cfg.normalize) == ("mean", True)


@pytest.mark.parametrize(
    "content, says",
    [
        ("[{not json", "is not valid JSON"),
        ('{"0": "sentence_transformers.models.Pooling"}', "expected a list of modules"),
        ('["1_Pooling"]', "item 0 must be an object whose 'type' and 'path' are strings"),
        ('[{"type": 3, "path": "1_Pooling"}]', "item 0 must be an object whose 'type' and 'path' are strings"),
        ('[{"type": "sentence_transformers.models.Pooling", "path": ["1_Pooling"]}]', "'type' and 'path' are strings"),
        (b"\xff\xfe[]", "is not valid JSON"),
    ],
)
def test_broken_modules_json(st_dir, content, says):
    target = st_dir / "modules.json"
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    msg = load_error(st_dir)
    assert str(target) in msg and says in msg and "restore the original" in msg, msg


@pytest.mark.parametrize(
    "content, says",
    [
        ("pooling_mode_mean_tokens = true", "is not valid JSON"),
        ('[{"pooling_mode_mean_tokens": true}]', "expected an object such as"),
        ('"mean"', "got a string"),
    ],
)
def test_broken_pooling_config(st_dir, content, says):
    target = st_dir / "1_Pooling" / "config.json"
    target.write_text(content)
    msg = load_error(st_dir)
    assert str(target) in msg and says in msg, msg


@pytest.mark.parametrize(
    "content, says",
    [
        ("{weight_map", "is not valid JSON"),
        ('[["a", "b"]]', "expected an object"),
        ('{"weight_map": ["model-00001.safetensors"]}', "'weight_map' must be an object"),
        ('{"weight_map": {"w": 1}}', "'weight_map' must be an object mapping tensor names to shard file names"),
        ('{"metadata": {}}', "'weight_map' must be an object"),
    ],
)
def test_broken_safetensors_index(tmp_path, content, says):
    path = write_config(tmp_path, "bert")
    (path / "model.safetensors.index.json").write_text(content)
    msg = load_error(path)
    assert str(path / "model.safetensors.index.json") in msg and says in msg, msg


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"tokenizer"', "{broken", '{"model": 5}'])
def test_broken_tokenizer_json(minilm_path, tmp_path, content):
    dst = tmp_path / "m"
    shutil.copytree(minilm_path, dst)
    (dst / "tokenizer.json").write_text(content)
    msg = load_error(dst)
    assert f"cannot read tokenizer {dst / 'tokenizer.json'}" in msg and "original tokenizer.json" in msg


@pytest.mark.parametrize("text, shown", [("caf\udce9 au lait", r"b'\xe9'"), ("x\ud83d y", r"'\ud83d'")])
def test_text_with_undecodable_bytes(minilm_path, text, shown):
    """surrogateescape strings (undecodable argv bytes) and lone surrogates: a ValueError, not a TypeError."""
    tok = Tokenizer(Path(minilm_path) / "tokenizer.json", 512)
    with pytest.raises(ValueError) as e:
        tok.encode(text)
    msg = str(e.value)
    assert shown in msg and "not valid Unicode" in msg and "decode the input with its real encoding" in msg
    with pytest.raises(ValueError, match="not valid Unicode"):
        tok.encode_batch(["fine", text])
    assert tok.encode("café au lait").tokens[:2] == ["[CLS]", "cafe"]
