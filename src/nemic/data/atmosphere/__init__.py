"""Reference data for the global atmosphere: a SPEEDY aquaplanet climate from jcm (:mod:`.truth`), spectral
coarse-graining (:mod:`.spectral`) and checked reading of truth files into per-column training sets
(:mod:`.columns`)."""
