"""Source readers: npz and the dispatch on `data.source` (sources), IDX (idx), image folders
(images), tables (tables, its second pass table_codes), .h5ad files (h5ad, its matrix
h5ad_matrix), and the `Dataset` each returns (source_dataset). Only prepare and the encode
command read sources: a change here re-runs prepare alone."""
