"""GGUF model files (ggml's container; city96's ComfyUI-GGUF quantizations of Flux.1, SD 3/3.5,
Chroma, FLUX.2, Qwen-Image and Z-Image, and QuantStack's of the same): the transformer's tensors in
the original key layout, quantized (Q8_0, Q4_0, Q4_K, ...) or plain. The architecture a file names
is ComfyUI-GGUF's (Chroma and FLUX.2 files say "flux", Z-Image's "lumina2"); the family is told
from the tensor names, as ComfyUI tells it.

By default the quantized matrices stay quantized (`read_gguf_quantized`: diffusers' GGUFParameter,
computed by diffusers' GGUFLinear, which dequantizes each layer's weight as it runs, in the compute
dtype): the memory is the file's. `read_gguf` dequantizes everything as it reads, to float32 tensors
(the weights the quantized ones stand for). Either way the weights hold the quantization's error (Q8_0:
at most half a step of each 32-value block's scale). Reading needs the `gguf` package (`pip install
latentdiff[gguf]`).
"""

from __future__ import annotations

from pathlib import Path

from latentdiff.errors import ModelError, UsageError
from latentdiff.formats.transformer_keys import SUPPORTED, layout_of
from latentdiff.runtime.libraries import quiet_libraries

MAGIC = b"GGUF"
ARCHITECTURES = ("flux", "sd3", "lumina2", "qwen_image")  # ComfyUI-GGUF's general.architecture of our families
ARCH_KEY = "general.architecture"


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


def _reader(path: Path):
    try:
        import gguf
    except ImportError:
        raise UsageError(
            f"{path} is a GGUF file: reading it needs the gguf package (pip install 'latentdiff[gguf]')"
        ) from None
    try:
        return gguf, gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError, TypeError) as e:  # a damaged header fails in these
        raise ModelError(f"{path} is not a readable GGUF file: {type(e).__name__} {e}") from None


def architecture(reader) -> str:
    field = reader.fields.get(ARCH_KEY)
    if field is None:
        return ""
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")


def gguf_family(path: Path, reader=None) -> str:
    """Our family of a GGUF transformer file; an architecture we do not load is refused in one line naming it."""
    reader = reader or _reader(path)[1]
    arch = architecture(reader)
    if arch not in ARCHITECTURES:
        raise UsageError(
            f"{path} is a GGUF file of the architecture {arch or 'unnamed'!r}; supported GGUF architectures: "
            f"{', '.join(ARCHITECTURES)} (transformer files of {SUPPORTED})"
        )
    family = layout_of((t.name for t in reader.tensors), path)
    if family is None:
        raise ModelError(f"{path} is a GGUF file of the architecture {arch!r} but holds no transformer of {SUPPORTED}")
    return family


def read_gguf(path: Path) -> tuple[str, dict]:
    """(our family, name -> float32 tensor, dequantized) of a GGUF transformer file."""
    import torch

    gguf, reader = _reader(path)
    family = gguf_family(path, reader)
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dimensions fastest first
        try:
            values = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise ModelError(f"{path}: the quantization {t.tensor_type.name} of {t.name} is not supported") from None
        # A copy (astype): the file is mapped read-only.
        tensors[t.name] = torch.from_numpy(values.astype("float32")).reshape(shape)
    return family, tensors


def read_gguf_quantized(path: Path) -> tuple[str, dict]:
    """(our family, name -> tensor): quantized tensors as diffusers' GGUFParameter (rows of blocks),
    plain ones (F32, F16) as tensors."""
    _, reader = _reader(path)
    family = gguf_family(path, reader)
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    try:
        return family, load_gguf_checkpoint(str(path))
    except ValueError as e:  # a quantization diffusers does not compute
        raise ModelError(f"{path}: {str(e).splitlines()[0]}") from None


def quantized_module(cls, config, sd: dict, where):
    """`cls` of `config` with `sd`'s quantized matrices kept quantized in diffusers' GGUFLinear layers
    (any other quantized tensor dequantized), computing in float32 until `compute_in` says otherwise."""
    import torch
    from accelerate import init_empty_weights
    from diffusers.quantizers.gguf.utils import GGUFLinear, _replace_with_gguf_linear, dequantize_gguf_tensor

    with init_empty_weights(include_buffers=False):
        module = cls.from_config(config)
    _replace_with_gguf_linear(module, torch.float32, sd)
    plain, kept = {}, set()
    for name, value in sd.items():
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if hasattr(value, "quant_type") and isinstance(owner, GGUFLinear) and attr == "weight":
            if tuple(owner.weight.shape) != tuple(value.quant_shape):
                raise ModelError(
                    f"{where}: {name} is {tuple(value.quant_shape)}, the model's {tuple(owner.weight.shape)}"
                )
            owner._parameters[attr] = value.requires_grad_(False)
            kept.add(name)
        else:
            plain[name] = dequantize_gguf_tensor(value).float() if hasattr(value, "quant_type") else value
    result = module.load_state_dict(plain, strict=False, assign=True)
    missing = [k for k in result.missing_keys if k not in kept]
    if missing or result.unexpected_keys:
        raise ModelError(
            f"weights in {where} do not fit its config: {', '.join((missing or result.unexpected_keys)[:3])}"
        )
    return module.eval().requires_grad_(False)


def is_quantized(module) -> bool:
    return any(hasattr(m, "compute_dtype") and hasattr(m.weight, "quant_type") for m in module.modules())


def compute_in(module, dtype) -> None:
    """Make the GGUF layers of `module` compute in `dtype` (the run's, chosen after loading)."""
    for m in module.modules():
        if hasattr(m, "compute_dtype"):
            m.compute_dtype = dtype


def write_gguf(path: Path, arch: str, tensors: dict, qtype: str = "Q8_0", fields=None) -> Path:
    """Write `tensors` (original layout) as GGUF of `arch`, as city96's convert.py does: matrices whose
    rows are whole blocks in `qtype`, the rest (vectors, norms, odd widths) in float32; `fields(writer)`
    adds the header's key-value fields."""
    import gguf

    kind = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    writer = gguf.GGUFWriter(str(path), arch=arch)
    if fields is not None:
        fields(writer)
    for name, t in tensors.items():
        values = t.detach().float().numpy()
        if values.ndim >= 2 and values.shape[-1] % block == 0:
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Text encoders as GGUF (city96's t5-v1_1-xxl-encoder-gguf, read by ComfyUI-GGUF's CLIPLoaderGGUF): their
# architecture -> our encoder kind (formats/encoder_files.py). transformers reads them (dequantized to float32).
ENCODER_ARCHITECTURES = {"t5encoder": "t5xxl", "t5": "t5xxl"}


def gguf_encoder_kind(path: Path) -> str | None:
    """The encoder kind of a GGUF text encoder file, None for any other GGUF (a transformer, another model)."""
    return ENCODER_ARCHITECTURES.get(architecture(_reader(path)[1]))


def gguf_params(path: Path) -> int:
    """The parameter count of a GGUF file's tensors (its header), for the memory check."""
    return sum(int(t.n_elements) for t in _reader(path)[1].tensors)


def read_gguf_encoder(path: Path) -> dict:
    """transformers' names -> float32 tensors of a GGUF text encoder (dequantized by transformers' GGUF loader)."""
    import torch
    import transformers as tf

    if gguf_encoder_kind(path) is None:
        raise ModelError(
            f"{path} is a GGUF file of the architecture {architecture(_reader(path)[1])!r}, no text encoder"
        )
    quiet_libraries()
    try:
        model = tf.T5EncoderModel.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
    except (ValueError, OSError, KeyError, IndexError, TypeError, RuntimeError) as e:
        raise ModelError(f"{path} is not a readable GGUF T5 encoder: {type(e).__name__} {str(e)[:200]}") from None
    return model.state_dict()


def write_t5_gguf(path: Path, t5, qtype: str = "Q8_0") -> Path:
    """A transformers T5EncoderModel written as llama.cpp's convert_hf_to_gguf writes a T5 encoder (city96's
    t5-v1_1-xxl-encoder-gguf): architecture t5encoder, llama.cpp's tensor names, its hyperparameters."""
    import gguf

    c = t5.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5ENCODER, c.num_layers)

    def fields(w):
        w.add_context_length(512)
        w.add_embedding_length(c.d_model)
        w.add_feed_forward_length(c.d_ff)
        w.add_block_count(c.num_layers)
        w.add_head_count(c.num_heads)
        w.add_key_length(c.d_kv)
        w.add_value_length(c.d_kv)
        w.add_layer_norm_rms_eps(c.layer_norm_epsilon)
        w.add_relative_attn_buckets_count(c.relative_attention_num_buckets)
        w.add_tokenizer_model("t5")
        w.add_token_list([f"t{i}".encode() for i in range(c.vocab_size)])  # stand-ins: tokenizers come from elsewhere
        w.add_token_scores([0.0] * c.vocab_size)
        w.add_token_types([1] * c.vocab_size)

    tensors = {
        names.get_name(k.removesuffix(".weight")) + ".weight": v
        for k, v in t5.state_dict().items()
        if k != "encoder.embed_tokens.weight"  # tied to shared.weight (token_embd)
    }
    return write_gguf(path, "t5encoder", tensors, qtype, fields)
