"""Small random checkpoints of every encoder family, built with transformers (save_pretrained, fixed
seeds), since real ones cannot be downloaded in tests: the reference our Encoder is held to."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 120
PAD = {"bert": 0, "distilbert": 0, "electra": 0, "roberta": 1, "xlm-roberta": 1, "camembert": 1, "mpnet": 1,
       "albert": 0}


def hf_config(family: str, vocab_size: int = VOCAB):
    """A two-layer, 32-wide config of `family` in transformers' own class and key names."""
    import transformers as t
    common = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=66)
    roberta = dict(common, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                   max_position_embeddings=66, layer_norm_eps=1e-5)
    return {
        "bert": lambda: t.BertConfig(**common),
        "distilbert": lambda: t.DistilBertConfig(vocab_size=vocab_size, dim=32, hidden_dim=64, n_layers=2,
                                                 n_heads=4, max_position_embeddings=64),
        "roberta": lambda: t.RobertaConfig(**roberta),
        "xlm-roberta": lambda: t.XLMRobertaConfig(**roberta),
        "camembert": lambda: t.CamembertConfig(**roberta),
        "electra": lambda: t.ElectraConfig(**common, embedding_size=16),
        "mpnet": lambda: t.MPNetConfig(**dict(common, pad_token_id=1, layer_norm_eps=1e-5)),
        "albert": lambda: t.AlbertConfig(**dict(common, num_hidden_layers=3), embedding_size=16, pad_token_id=0),
    }[family]()


def build_checkpoint(family: str, directory: Path, seed: int = 0, vocab_size: int = VOCAB):
    """A random `family` base model saved to `directory`; returns the transformers model, in eval mode."""
    import transformers
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(hf_config(family, vocab_size)).eval()
    with torch.no_grad():  # transformers zeroes biases and LayerNorm shifts; make every weight count
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    model.save_pretrained(directory)
    return model


def build_classifier(family: str, directory: Path, num_labels: int = 3, seed: int = 0, vocab_size: int = VOCAB,
                     **settings):
    """A random `family` *ForSequenceClassification with `num_labels` labels saved to `directory`, `settings`
    (problem_type, id2label, sentence_transformers, ...) set on its config; returns it, in eval mode."""
    import transformers
    config = hf_config(family, vocab_size)
    config.num_labels = num_labels
    for name, value in settings.items():
        setattr(config, name, value)
    torch.manual_seed(seed)
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():  # as build_checkpoint: every weight counts, and the logits spread
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    model.save_pretrained(directory)
    return model


def padded_ids(family: str, batch: int = 3, seq: int = 20, pad_from: int = 12, seed: int = 0):
    """Token ids (never the pad id on real tokens), a mask with the rows after the first padded, segments
    zero: what a tokenizer gives for a batch of uneven texts."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, pad_from:] = 0
    mask[2, pad_from // 2:] = 0
    ids[mask == 0] = PAD[family]
    return ids, mask, torch.zeros_like(ids)


# A little of several scripts, so each tokenizer kind learns pieces of each.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage tonight.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "素早い茶色の狐がのろまな犬を飛び越える。",
]
TOKENIZER_KINDS = ("wordpiece", "byte-level-bpe", "unigram", "albert-unigram", "vocab.txt")


def build_tokenizer(kind: str, directory: Path) -> int:
    """Train a tiny tokenizer of `kind` with the `tokenizers` library and save it as transformers would
    (tokenizer.json and tokenizer_config.json; a bare vocab.txt for "vocab.txt"). Returns its size."""
    import json

    import transformers
    from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer, SentencePieceUnigramTokenizer
    directory.mkdir(parents=True, exist_ok=True)
    corpus = CORPUS * 10
    if kind in ("wordpiece", "vocab.txt"):
        trained = BertWordPieceTokenizer(lowercase=kind == "wordpiece")
        trained.train_from_iterator(corpus, vocab_size=300, show_progress=False)
        if kind == "vocab.txt":  # the layout before tokenizer.json, here cased, as its config says
            trained.save_model(str(directory))
            (directory / "tokenizer_config.json").write_text(json.dumps(
                {"do_lower_case": False, "tokenizer_class": "BertTokenizer"}))
            return trained.get_vocab_size()
        tokenizer = transformers.BertTokenizer(vocab=trained.get_vocab())
    elif kind == "byte-level-bpe":
        trained = ByteLevelBPETokenizer()
        trained.train_from_iterator(corpus, vocab_size=400, show_progress=False,
                                    special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        model = json.loads(trained.to_str())["model"]
        tokenizer = transformers.RobertaTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])
    else:  # Unigram with Metaspace: XLM-R's specials and template, or ALBERT's ([CLS] A [SEP] B [SEP])
        specials = ["<s>", "<pad>", "</s>", "<unk>"] if kind == "unigram" else ["<pad>", "<unk>", "[CLS]", "[SEP]"]
        trained = SentencePieceUnigramTokenizer()
        trained.train_from_iterator(corpus, vocab_size=300, show_progress=False, unk_token="<unk>",
                                    special_tokens=specials)
        pieces = [tuple(piece) for piece in json.loads(trained.to_str())["model"]["vocab"]]
        tokenizer = (transformers.XLMRobertaTokenizer if kind == "unigram" else transformers.AlbertTokenizer)(vocab=pieces)
    tokenizer.save_pretrained(directory)
    return len(tokenizer)


def build_sentence_transformer(directory: Path, family: str = "xlm-roberta", kind: str = "unigram",
                               pooling: str = "mean", seed: int = 0):
    """A sentence-transformers layout (modules.json, 1_Pooling, 2_Normalize) over a random `family`
    checkpoint with a `kind` tokenizer trained here. Returns (its directory, the SentenceTransformer)."""
    from sentence_transformers import SentenceTransformer, models
    base = directory / "base"
    size = build_tokenizer(kind, base)
    build_checkpoint(family, base, seed=seed, vocab_size=size)
    transformer = models.Transformer(str(base), max_seq_length=64)
    modules = [transformer, models.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling),
               models.Normalize()]
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(directory / "st"))
    return directory / "st", model
