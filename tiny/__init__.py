"""The CPU stand-in: the tiny Gemma 3 base and MedGemma's CPU twin, apart from the product.

- `tiny.build`: `make tiny-model` installs the committed base `tiny/base`; `make tiny-pretrain`
  rebuilds it (`tiny.tokenizer`, then the stages of `tiny.pretraining`).
- `tiny.copy_probe`: the pretraining tasks (copy, rank, describe) and their probes.
- `tiny.twin`: a tiny multimodal Gemma 3 saved as the Hub's MedGemma 4B-it is.
- `tiny.quick_reports`: a model folder's reports in process, judged, without a server.

The product (aria, preparation, training, serve, evaluation, publishing) reaches this package
through one seam only: `training.bench_training` takes `tiny.tokenizer.train_tokenizer` as the
stand-in tokenizer of a config-only model (tests/test_import_graph.py holds that line). The tiny
profile's base is a folder (`make tiny-model`), which the product loads as it loads MedGemma.
"""
