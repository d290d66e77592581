"""The method mechanism every omnipress stage stands on.

- `Method` (`method.py`): base of encoder, token and KV-cache methods; `with method(model):` and `compose(...)`;
- `ModelSession` (`session.py`): per-model state while methods are active, one attention dispatcher that any number
  of listeners hear, everything restored on exit;
- `dispatch.py`: the `omnipress:<base>` attention function transformers calls.
"""

from .method import Composed, Method, MethodContext, compose
from .session import Listener, LMCall, ModelSession, iter_cache_layers

__all__ = ["Composed", "LMCall", "Listener", "Method", "MethodContext", "ModelSession", "compose", "iter_cache_layers"]
