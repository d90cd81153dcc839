"""RFNet on tiny shapes: block shapes, the serving split, persistence, gradients, masking, learning."""

from __future__ import annotations

import json

import pytest
import torch

from rfad.models.rfnet import RFNet, RFNetConfig, RFNetJudge, RFNetText, tiny_rfnet_config


def _inputs(batch=2, height=80, width=96, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 300, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[:, length // 2:] = 0  # second half padding
    ids[:, length // 2:] = 1
    return (torch.rand(batch, 3, height, width, generator=g), torch.rand(batch, 3, height, width, generator=g),
            torch.rand(batch, 1, height, width, generator=g), torch.rand(batch, 1, height, width, generator=g), ids, mask)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RFNet(tiny_rfnet_config()).eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_through_every_block(model, batch):
    product, generated, depth, saliency, ids, mask = _inputs(batch)
    config = model.config
    tokens = model.encode_images([product], [0])[0]
    assert tokens.shape == (batch, config.grid**2, config.width) == (batch, 4, 32)
    caption = model.encode_caption(ids, mask)
    assert caption.shape == (batch, ids.shape[1], config.width)
    filtered = model.filters[0](tokens, caption, mask == 0)
    assert filtered.shape == tokens.shape
    assert model.position_embedding.shape[1] == 1 + 4 * config.grid**2
    logits = model(product, generated, depth, saliency, ids, mask)
    assert logits.shape == (batch, 5) and logits.dtype == torch.float32


def test_full_size_shapes():
    config = RFNetConfig()  # ResNet-50 + RoBERTa-base, 384 px, width 384
    assert config.grid == 12 and config.resnet["hidden_sizes"][-1] == 2048
    model = RFNet(config)
    backbone = sum(p.numel() for p in model.image_backbones.parameters())
    assert 23_000_000 < backbone < 24_000_000  # ResNet-50 without its classifier: 23.5M
    assert model.position_embedding.shape == (1, 1 + 4 * 144, 384)


def test_forward_equals_the_two_serving_graphs(model):
    product, generated, depth, saliency, ids, mask = _inputs()
    with torch.no_grad():
        logits = model(product, generated, depth, saliency, ids, mask)
        caption = RFNetText(model)(ids, mask)
        probabilities = RFNetJudge(model)(product, generated, depth, saliency, caption, mask)
    assert torch.equal(probabilities, logits.softmax(-1))


def test_save_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "r")
    loaded = RFNet.from_pretrained(tmp_path / "r")
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model(*inputs), loaded(*inputs))
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert RFNetConfig.from_dict(config).to_dict() == json.loads(json.dumps(model.config.to_dict()))


def test_shared_backbone_option():
    shared, separate = tiny_rfnet_config(), tiny_rfnet_config()
    separate.shared_backbone = False
    one, four = RFNet(shared), RFNet(separate)
    backbone = sum(p.numel() for p in one.image_backbones.parameters())
    total = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert len(four.image_backbones) == 4 and total(four) - total(one) == 3 * backbone


def test_loading_errors_name_the_problem(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (tmp_path / "empty").mkdir()
        RFNet.from_pretrained(tmp_path / "empty")
    model.save_pretrained(tmp_path / "r")
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "r" / "model.safetensors"))
    state.pop("head.weight")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "r" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \(e.g. head.weight\).*unexpected \(e.g. extra.weight\)"):
        RFNet.from_pretrained(tmp_path / "r")
    (tmp_path / "r" / "config.json").write_text(json.dumps({"width": 32, "colour": "red"}))
    with pytest.raises(ValueError, match="colour"):
        RFNet.from_pretrained(tmp_path / "r")


def test_from_backbones_loads_pretrained_encoders(tmp_path):
    from rfad.tiny.zoo import tiny_resnet, tiny_roberta
    from rfad.tiny.tokenizers import build_roberta_tokenizer

    resnet, roberta = tiny_resnet(seed=5), tiny_roberta(build_roberta_tokenizer(), seed=5)
    resnet.save_pretrained(tmp_path / "resnet")
    roberta.save_pretrained(tmp_path / "roberta")
    model = RFNet.from_backbones(tiny_rfnet_config(), tmp_path / "resnet", tmp_path / "roberta")
    for key, value in resnet.state_dict().items():
        assert torch.equal(model.image_backbones[0].state_dict()[key], value)
    for key, value in roberta.state_dict().items():
        assert torch.equal(model.text_encoder.state_dict()[key], value)


def test_gradients_reach_every_input_and_the_text_encoder(model):
    product, generated, depth, saliency, ids, mask = _inputs()
    images = [t.requires_grad_(True) for t in (product, generated, depth, saliency)]
    model.zero_grad()
    loss = -torch.log_softmax(model(*images, ids, mask), dim=-1)[:, 0].mean()
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in images)
    assert model.text_encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_caption_padding_is_ignored_and_tokens_matter(model):
    product, generated, depth, saliency, ids, mask = _inputs()
    with torch.no_grad():
        base = model(product, generated, depth, saliency, ids, mask)
        padded = ids.clone()
        padded[:, -1] = 250  # a padded position
        assert torch.allclose(base, model(product, generated, depth, saliency, padded, mask), atol=1e-6)
        changed = ids.clone()
        changed[:, 1] = 250  # a real token
        assert not torch.allclose(base, model(product, generated, depth, saliency, changed, mask), atol=1e-4)
        all_padding = torch.zeros_like(mask)
        assert torch.isfinite(model(product, generated, depth, saliency, ids, all_padding)).all()


def test_tiny_rfnet_can_fit_a_small_batch():
    torch.manual_seed(1)
    model = RFNet(tiny_rfnet_config()).train()
    product, generated, depth, saliency, ids, mask = _inputs(batch=8, height=64, width=64, seed=3)
    labels = torch.arange(8) % 5
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(product, generated, depth, saliency, ids, mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
