"""Secateur: the models of a checkpoint whose layers differ in width (pruned per layer).

Written by Secateur into an export whose config.json lists each layer's widths
(`secateur_layer_widths`) and names these classes in `auto_map`, so that
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads it. Each model is the
library's own class; only its decoder layers are rebuilt, each one from a view of the config
that carries that layer's widths. Nothing else differs from the stock model.
"""
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention, GPT2Block
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer
from transformers.pytorch_utils import Conv1D


class LayerConfig:
    """The model's config with one layer's widths; every other attribute is read through, live."""

    def __init__(self, config, **widths):
        self.__dict__["_config"] = config
        self.__dict__.update(widths)

    def __getattr__(self, name):
        if name == "_config":
            raise AttributeError(name)
        return getattr(self._config, name)


def layer_widths(config, layer):
    return {key: widths[layer] for key, widths in config.secateur_layer_widths.items()}


def llama_layers(config, layer_class):
    return nn.ModuleList(layer_class(LayerConfig(config, **layer_widths(config, i)), i)
                         for i in range(config.num_hidden_layers))


class SecateurLlamaConfig(LlamaConfig):
    model_type = "secateur_llama"


class SecateurLlamaForCausalLM(LlamaForCausalLM):
    config_class = SecateurLlamaConfig

    def __init__(self, config):
        super().__init__(config)
        self.model.layers = llama_layers(config, LlamaDecoderLayer)
        self.post_init()


class SecateurQwen2Config(Qwen2Config):
    model_type = "secateur_qwen2"


class SecateurQwen2ForCausalLM(Qwen2ForCausalLM):
    config_class = SecateurQwen2Config

    def __init__(self, config):
        super().__init__(config)
        self.model.layers = llama_layers(config, Qwen2DecoderLayer)
        self.post_init()


class GPT2AttentionOfWidth(GPT2Attention):
    """GPT-2 attention with `heads` heads, each config.head_dim wide (not n_embd / n_head)."""

    def __init__(self, config, heads, layer_idx):
        width = heads * config.head_dim
        super().__init__(LayerConfig(config, hidden_size=width, num_attention_heads=heads), layer_idx=layer_idx)
        self.embed_dim = config.hidden_size
        self.c_attn = Conv1D(3 * width, self.embed_dim)
        self.c_proj = Conv1D(self.embed_dim, width)


class SecateurGPT2Config(GPT2Config):
    model_type = "secateur_gpt2"


class SecateurGPT2LMHeadModel(GPT2LMHeadModel):
    config_class = SecateurGPT2Config

    def __init__(self, config):
        super().__init__(config)
        blocks = []
        for i in range(config.n_layer):
            w = layer_widths(config, i)
            block = GPT2Block(LayerConfig(config, n_inner=w["intermediate_size"]), layer_idx=i)
            block.attn = GPT2AttentionOfWidth(config, w["num_attention_heads"], i)
            blocks.append(block)
        self.transformer.h = nn.ModuleList(blocks)
        self.post_init()
