"""Solvers of the reconstruct stage, apart from the models they fit: :mod:`.gradient`
(minibatch gradient descent over frames, MPI data parallel), :mod:`.phase_retrieval`
(HIO/ER with shrink-wrap, then gradient refinement), :mod:`.optimizers`, :mod:`.regularizers`.
A modality names its solver (:attr:`xrayflow.modalities.Modality.solver`)."""
