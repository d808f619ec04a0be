"""Publishing: render the model cards from the latest benchmark and push models and datasets to the Hub.

python -m publishing.generate_model_card    # make model-card
python -m publishing.hf_push model|datasets # make hf-push-model / make hf-push-datasets
"""
