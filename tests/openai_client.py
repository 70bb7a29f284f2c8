"""The official OpenAI Python client against wick, with its defaults.

Usage: python openai_client.py CHAT_URL EMBED_URL BUSY_CHAT_URL
  CHAT_URL       a wick serving the SmolLM2 chat model
  EMBED_URL      a wick serving all-MiniLM-L6-v2
  BUSY_CHAT_URL  a wick serving the chat model with room for one sequence (no waiting queue),
                 to see the client's retry honour Retry-After
Prints one line per check and exits non-zero on the first failure.
"""
import base64
import struct
import sys
import threading
import time
import urllib.request

import openai

chat_url, embed_url, busy_url = sys.argv[1:4]
chat = openai.OpenAI(base_url=chat_url + "/v1", api_key="unused")
embed = openai.OpenAI(base_url=embed_url + "/v1", api_key="unused")

models = chat.models.list()
model = models.data[0].id
assert model == "smollm2-135m-instruct", model
print("models.list:", model)

messages = [{"role": "user", "content": "What is the capital of France?"}]
whole = chat.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24)
text = whole.choices[0].message.content
assert whole.choices[0].finish_reason in ("stop", "length"), whole
assert whole.usage.completion_tokens >= 1
print("chat:", repr(text), whole.usage)

pieces, finish, usage = [], None, None
with chat.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24,
                                  stream=True, stream_options={"include_usage": True}) as stream:
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
assert "".join(pieces) == text, ("".join(pieces), text)
assert finish == whole.choices[0].finish_reason and usage.total_tokens == whole.usage.total_tokens
print("chat stream: same text, finish", finish)

completion = chat.completions.create(model=model, prompt="The capital of France is", max_tokens=8,
                                     temperature=0, logprobs=2)
assert completion.choices[0].finish_reason == "length"
assert len(completion.choices[0].logprobs.tokens) == 8
print("completions:", repr(completion.choices[0].text))
streamed = "".join(c.choices[0].text for c in chat.completions.create(
    model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
assert streamed == completion.choices[0].text, (streamed, completion.choices[0].text)
print("completions stream: same text")

try:
    chat.chat.completions.create(model=model, messages=messages, n=2)
    raise SystemExit("n=2 was accepted")
except openai.UnprocessableEntityError as e:
    assert e.body["param"] == "n", e.body
    print("n=2 refused:", e.body["message"])

# The client asks for base64 by default and decodes it itself.
vectors = embed.embeddings.create(model="all-minilm-l6-v2", input=["a cat", "a dog"])
assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
floats = embed.embeddings.create(model="all-minilm-l6-v2", input="a cat", encoding_format="float")
assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, vectors.data[0].embedding)) < 1e-6
print("embeddings: base64 and float agree")

# Retry-After: one long generation holds the only slot; the client's 429 retry waits as told.
# The holder's 160 tokens take about a second at ~170 tokens/s, well past the 0.3 s the late
# request waits before it asks, and within the three retries a slower machine needs.
busy = openai.OpenAI(base_url=busy_url + "/v1", api_key="unused", max_retries=3)
holder = threading.Thread(target=lambda: busy.completions.create(
    model=model, prompt="Count from one to one hundred:", max_tokens=160, temperature=0))
holder.start()
time.sleep(0.3)
started = time.monotonic()
late = busy.completions.create(model=model, prompt="Hi", max_tokens=2, temperature=0)
waited = time.monotonic() - started
holder.join()
metrics = urllib.request.urlopen(busy_url + "/metrics").read().decode()
overloaded = [l for l in metrics.splitlines() if l.startswith('wick_request_failures_total{reason="overloaded"}')]
count = float(overloaded[0].split()[-1])
assert count >= 1, overloaded
assert waited >= 0.9 * count, (waited, count)
print(f"retry: {int(count)} x 429 with Retry-After, then served after {waited:.1f} s:", repr(late.choices[0].text))
print("all checks passed")
