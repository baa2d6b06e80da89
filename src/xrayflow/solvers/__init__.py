"""Solvers of the reconstruct stage, apart from the models they fit: :mod:`.gradient`
(minibatch gradient descent over frames, MPI data parallel), :mod:`.phase_retrieval`
(HIO/ER with shrink-wrap, then gradient refinement), :mod:`.linear_inverse` (unknowns that
enter the measurements linearly: L-BFGS-B, Adam or CGLS, MPI data parallel over rows),
:mod:`.optimizers`, :mod:`.regularizers`.
A modality names its solver (:attr:`xrayflow.modalities.Modality.solver`)."""
