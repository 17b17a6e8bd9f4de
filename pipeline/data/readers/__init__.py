"""Source readers: npz and the dispatch on `data.source` (sources), IDX (idx), image folders
(images), tables (tables), and the `Dataset` each returns (source_dataset). Only prepare and
the encode command read sources: a change here re-runs prepare alone."""
