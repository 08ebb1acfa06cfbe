"""PyTorch integration: a DistributedOptimizer in the style of Horovod's and BytePS's.

    import regtopk.torch as rt
    opt = rt.DistributedOptimizer(model, server="host:port", worker_id=0)
    for x, y in loader:
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
        if opt.finished: break

Construction joins the job (waiting for the server), reads the job's config and either uploads
the model's parameters (the first worker) or pulls the server's. step() flattens the gradients
(named_parameters() order), sparsifies them with the job's algorithm, pushes them, and applies
the round's aggregate to the parameters in place with the job's optimizer, exactly as the
server does: every replica stays bit-identical to the server (checked by digest every few
rounds; a drifted replica is re-pulled).

The optimizer is the job's, configured on the server (--optimizer, --lr, ...), not here.
Parameters live on any device; the exchange goes through a flat float32 CPU buffer.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from regtopk import _core

__all__ = ["DistributedOptimizer", "job_config", "layout_of"]


def layout_of(model: torch.nn.Module) -> str:
    """The layout string the server's layout digest covers ("name:AxB;" per trained parameter,
    frozen ones left out), the same as the C++ worker's for a module with the same parameters."""
    return "".join(f"{n}:{'x'.join(str(s) for s in p.shape)};"
                   for n, p in model.named_parameters() if p.requires_grad)


def _security(tls_ca="", tls_cert="", tls_key="", tls_server_name="", job_secret_file=""):
    return _core.Security(tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                          tls_server_name=tls_server_name, job_secret_file=job_secret_file)


def job_config(model: torch.nn.Module, server: str, worker_id: int = 0,
               rpc_timeout: float = 30.0, **security) -> dict:
    """The job's config, without joining (e.g. to split the data by its num_workers and seed
    before constructing the optimizer). `security`: as DistributedOptimizer's TLS options."""
    dim = sum(p.numel() for p in model.parameters())
    return _core.probe(server, worker_id, dim, layout_of(model), rpc_timeout,
                       security=_security(**security))


class DistributedOptimizer:
    """Trains `model` in the regtopk job at `server` as worker `worker_id`.

    num_samples: this worker's number of training samples (the weight when the job weights by
      samples). state_dir: where the worker's state is saved before each checkpoint round, so a
      restarted process resumes bit-identically (required when the server checkpoints).
      allow_fresh_state: join a running job without saved state (not bit-identical).
      threads: threads that sparsify each gradient and step the replica, 1 to 256 (speed only;
      what is sent and the replica are the same bit for bit for any number).
    Timeouts are in seconds, as the C++ worker's flags. Security, as the C++ worker's flags:
      tls_ca (the CA of the server's certificate), tls_cert / tls_key (this worker's client
      certificate, mutual TLS), tls_server_name, job_secret_file (worker tokens).
    """

    def __init__(self, model: torch.nn.Module, server: str, worker_id: int, *,
                 num_samples: int = 1, state_dir: str = "", allow_fresh_state: bool = False,
                 partition_digest: int = 0, rpc_timeout: float = 30.0,
                 push_timeout: float = 900.0, start_timeout: float = 300.0,
                 reconnect_timeout: float = 300.0, threads: int = 1, tls_ca: str = "",
                 tls_cert: str = "", tls_key: str = "", tls_server_name: str = "",
                 job_secret_file: str = ""):
        self.model = model
        # Frozen parameters (requires_grad=False) stay out of the flat vector, as in the C++
        # worker: never sent, never updated.
        self._params = [p for _, p in model.named_parameters() if p.requires_grad]
        if not self._params:
            raise ValueError("the model has no parameters to train")
        for n, p in model.named_parameters():
            if p.dtype != torch.float32:
                raise ValueError(f"parameter {n} is {p.dtype}; regtopk trains float32 parameters")
        self._sizes = [p.numel() for p in self._params]
        dim = sum(self._sizes)
        with torch.no_grad():
            initial = torch.cat([p.detach().reshape(-1).cpu() for p in self._params]).numpy()
        self._session = _core.Session(
            server, worker_id, initial, layout_of(model), num_samples=num_samples,
            state_dir=state_dir, allow_fresh_state=allow_fresh_state,
            partition_digest=partition_digest, rpc_timeout=rpc_timeout,
            push_timeout=push_timeout, start_timeout=start_timeout,
            reconnect_timeout=reconnect_timeout, threads=threads,
            security=_security(tls_ca, tls_cert, tls_key, tls_server_name, job_secret_file))
        # The flat gradient handed to C++ (reused), and a zero-copy view of the replica.
        self._grad = torch.zeros(dim, dtype=torch.float32)
        with warnings.catch_warnings():
            # The view is read-only on purpose: only the session writes the replica.
            warnings.simplefilter("ignore", UserWarning)
            self._replica = torch.from_numpy(self._session.parameters())
        self.last_stats: dict = {}
        self._load()

    # The job.
    @property
    def round(self) -> int:
        """The round this worker computes a gradient for next."""
        return self._session.round

    @property
    def finished(self) -> bool:
        """The job's last round is done."""
        return self._session.finished

    @property
    def config(self) -> dict:
        return self._session.config

    @property
    def resumed(self) -> bool:
        return self._session.resumed

    @property
    def resyncs(self) -> int:
        return self._session.resyncs

    def parameters_digest(self) -> int:
        """The digest of the replica, equal to the server's (and the C++ workers')."""
        return _core.digest_floats(self._session.parameters())

    # torch.optim.Optimizer's interface.
    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    def local_step(self, lr: Optional[float] = None) -> None:
        """One local SGD step on this worker's copy, nothing sent: p -= lr * p.grad, at the job's
        learning rate for this round unless `lr` is given. The authors' loop ("local steps"):
        call it after each of L - 1 mini-batches, then step() sends the gradient of the L-th,
        computed at the locally updated point; step() then resets the model to the replica, so
        replicas stay identical to the server whatever the local steps did.

            for s in range(L):
                opt.zero_grad(); loss_fn(model(x[s]), y[s]).backward()
                opt.local_step() if s < L - 1 else opt.step()
        """
        rate = self._session.learning_rate if lr is None else float(lr)
        with torch.no_grad():
            for p in self._params:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-rate)

    def step(self, closure=None) -> dict:
        """One round: push this worker's gradient, apply the aggregate. Returns the round's
        statistics (see WorkerSession's StepStats). When stats["rolled_back"] is true the job
        went back to a committed checkpoint round: the parameters are that round's now."""
        if closure is not None:
            with torch.enable_grad():
                closure()
        at = 0
        with torch.no_grad():
            for p, n in zip(self._params, self._sizes):
                if p.grad is None:
                    self._grad[at:at + n].zero_()
                else:
                    self._grad[at:at + n].copy_(p.grad.reshape(-1))
                at += n
        self.last_stats = self._session.step(self._grad.numpy())
        self._load()
        return self.last_stats

    def _load(self) -> None:
        at = 0
        with torch.no_grad():
            for p, n in zip(self._params, self._sizes):
                p.copy_(self._replica[at:at + n].view_as(p))
                at += n
