"""Data preparation: generate the seeded datasets, import outside ones, render the dataset card.

python -m preparation.generate_datasets        # make datasets
python -m preparation.copy_datasets --src DIR  # make copy-datasets SRC=DIR
python -m preparation.generate_dataset_card    # make dataset-card
"""
