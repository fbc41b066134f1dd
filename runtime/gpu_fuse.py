"""Fuse frames that live on the GPU without a host round trip (torch and TensorRT backends).

Pre- and postprocessing run as a few torch operations on the GPU: frames (HxW or HxWx3, uint8 or
float32) -> (1, K, C, Hp, Wp) float in [0, 1], reflect-padded at the bottom and right like the
host path; the fused (1, C, Hp, Wp) -> cropped, rounded, back to HxW(x3) in the frames' dtype.
The fused frame is returned as a torch CUDA tensor (it has ``__cuda_array_interface__`` and
DLPack, so CuPy and others wrap it without a copy), or written into ``out`` (a device array of
the frames' shape and dtype). torch is needed for this path (the TensorRT backend uses it only
for these kernels). Not yet run on a GPU: see docs/runtime.md.
"""

from __future__ import annotations

from mfif.errors import BackendUnavailableError, ConfigError, InputError
from mfif.lazy import require
from mfif.runtime.device_frames import check_device_frames


def _torch():
    return require("torch", extra="train", purpose="fusing frames that are on the GPU (pre/postprocessing kernels)")


def as_tensor(torch, frame, device):
    """A torch view of a GPU frame (no copy)."""
    if isinstance(frame, torch.Tensor):
        return frame
    if hasattr(frame, "__cuda_array_interface__"):
        return torch.as_tensor(frame, device=device)
    return torch.from_dlpack(frame)


def prepare(torch, frames, multiple: int, dtype):
    """K frames (HxW or HxWxC tensors) -> (1, K, C, Hp, Wp) of ``dtype`` in [0, 1], padded by
    reflection at the bottom and right to a multiple of ``multiple`` (as the host path pads)."""
    stack = torch.stack([f if f.dim() == 3 else f[..., None] for f in frames])        # K, H, W, C
    height, width = stack.shape[1], stack.shape[2]
    scale = 1.0 / 255.0 if stack.dtype == torch.uint8 else 1.0
    planar = stack.permute(0, 3, 1, 2).to(dtype) * scale                                # K, C, H, W
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        planar = torch.nn.functional.pad(planar, (0, pad_w, 0, pad_h), mode=mode)
    return planar.unsqueeze(0).contiguous()


def finish(torch, fused, height: int, width: int, like, out=None):
    """(1, C, Hp, Wp) -> the frames' layout and dtype (``like``: one input frame), written into
    ``out`` when given."""
    image = fused[0, :, :height, :width].float()
    if like.dim() == 2 or (like.dim() == 3 and like.shape[2] == 1):
        if image.shape[0] == 3:  # a grey frame fused by a colour model: back to grey (BT.601 luma, BGR order)
            weights = torch.tensor([0.114, 0.587, 0.299], device=image.device, dtype=image.dtype)
            image = (image * weights[:, None, None]).sum(0, keepdim=True)
        image = image[0] if like.dim() == 2 else image.permute(1, 2, 0)
    else:
        image = image.permute(1, 2, 0)
    if like.dtype == torch.uint8:
        result = (image * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)
    else:
        result = image.clamp(0, 1).to(like.dtype)
    if out is None:
        return result.contiguous()
    target = as_tensor(torch, out, result.device)
    if tuple(target.shape) != tuple(result.shape) or target.dtype != result.dtype:
        raise InputError(f"out must be a device array of shape {tuple(result.shape)} and dtype {result.dtype}, like "
                         f"the frames; got {tuple(target.shape)} {target.dtype}")
    target.copy_(result)
    return out


def fuse_on_gpu(backend, info, frames, out=None):
    """Fuse GPU frames with ``backend`` (torch or TensorRT); returns the fused frame on the GPU."""
    torch = _torch()
    memories = check_device_frames(frames)
    if info.sources and len(frames) != info.sources:
        raise InputError(f"model {info.model} takes exactly {info.sources} frames, got {len(frames)}")
    tensors = [as_tensor(torch, frame, None) for frame in frames]
    device = tensors[0].device
    if device.type != "cuda":
        raise InputError(f"GPU frames are on {device}, not a CUDA device")
    stream = memories[0].stream
    if stream not in (None, 1, 2):  # the producer's own stream: ours waits for it on the GPU
        torch.cuda.current_stream(device).wait_stream(torch.cuda.ExternalStream(stream, device=device))
    height, width = tensors[0].shape[0], tensors[0].shape[1]
    channels = 1 if tensors[0].dim() == 2 else tensors[0].shape[2]
    model_channels = info.channels or channels
    if backend.name == "torch":
        model_device = getattr(backend, "_device", None)
        if model_device is None or model_device.type != "cuda":
            raise ConfigError("frames on the GPU need the torch backend on a GPU (device='cuda'); this one runs on "
                              f"{backend.device}")
        dtype = torch.float16 if backend.fp16 else torch.float32
        sources = prepare(torch, tensors, info.pad_to, dtype)
        sources = _match_channels(torch, sources, model_channels)
        with torch.inference_mode():
            fused = backend.model(sources)
    elif backend.name == "tensorrt":
        sources = _match_channels(torch, prepare(torch, tensors, info.pad_to, torch.float32),
                                  model_channels)
        # TensorRT runs on a stream of its own: the preprocessing kernels on torch's stream must be
        # done before it reads, and the previous frame's postprocessing before it overwrites its
        # output (torch's __cuda_array_interface__ names no stream to wait on).
        torch.cuda.current_stream(device).synchronize()
        view, _ = backend.run_device(sources, copy_to_host=False)
        fused = torch.as_tensor(view, device=device)
    else:
        raise BackendUnavailableError(f"frames on the GPU run on the torch or TensorRT backend, not {backend.name!r}; "
                                      "copy them to the host (numpy) for this one")
    return finish(torch, fused, height, width, tensors[0], out)


def _match_channels(torch, sources, model_channels: int):
    channels = sources.shape[2]
    if channels == model_channels:
        return sources
    if channels == 1 and model_channels == 3:
        return sources.expand(-1, -1, 3, -1, -1).contiguous()
    raise InputError(f"the model takes {model_channels}-channel frames; GPU frames have {channels} (colour frames "
                     "for a grey model are fused on the host path only)")
