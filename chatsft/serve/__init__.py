"""`chatsft serve` (an OpenAI-compatible HTTP server) and `chatsft compare` (blind A/B review).

Both run on Starlette + uvicorn; prompts are encoded by `ChatEncoder.encode_prompt`, the
encoding training was checked against, and generation goes through `model.generate`.
"""
