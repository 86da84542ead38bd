//! Model files: safetensors in PyTorch's nn.Linear layout (written by the io owner).
