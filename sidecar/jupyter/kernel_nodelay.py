# envjupyter: send kernel WebSocket messages at once (TCP_NODELAY). Jupyter
# never sets it, so each small message waits for the peer's delayed ACK
# (about 40 ms a round trip). This file sets no configuration value: it only
# wraps the kernel WebSocket handler's open() of whichever Jupyter loads it.
def _envjupyter_kernel_ws_nodelay():
    import importlib
    import inspect
    for module, name in (
        ("jupyter_server.services.kernels.websocket", "KernelWebsocketHandler"),  # jupyter-server 2
        ("jupyter_server.services.kernels.handlers", "ZMQChannelsHandler"),  # jupyter-server 1
        ("notebook.services.kernels.handlers", "ZMQChannelsHandler"),  # notebook 6
    ):
        try:
            handler = getattr(importlib.import_module(module), name)
        except Exception:
            continue
        if getattr(handler, "_envjupyter_nodelay", False):
            continue
        opened = handler.open

        async def open(self, *args, _opened=opened, **kwargs):
            try:
                self.set_nodelay(True)
            except Exception:
                pass
            result = _opened(self, *args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        handler.open = open
        handler._envjupyter_nodelay = True


_envjupyter_kernel_ws_nodelay()
