"""ComfyUI entry point of the M2AE node pack.

Outside ComfyUI (no ``comfy_api``) importing this file exposes nothing and has no side effects.
"""
