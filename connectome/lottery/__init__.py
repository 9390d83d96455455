"""The lottery-ticket experiment of Frankle & Carbin (ICLR 2019, arXiv 1803.03635): train, prune by
magnitude, reset the survivors to their initial (or rewound) values, train again, level after level,
with controls that tell a winning ticket from a merely sparse network.

    settings   LotterySettings: every hyperparameter, declared once; the digest names the run folder
    networks   the networks, their seeded initialisation, the kind of each prunable weight
    strategies how a level's mask follows from the trained weights (layerwise, global)
    controls   random reinitialisation, random pruning
    trainer    one training, with the state that lets a killed one resume to the same numbers
    experiment Lottery: the run folder, the sequence of trainings, masks, starting weights, results
    report     lottery.csv and the paper-style figure

    from connectome.lottery import Lottery, LotterySettings
    Lottery(LotterySettings.from_recipe("lottery-lenet300-mnist", {"levels": 3})).run()
"""

__all__ = ["Lottery", "LotterySettings"]


def __getattr__(name):
    # Lazy, so that reading the settings (the command line's --help) does not load torch's data and models.
    if name == "Lottery":
        from connectome.lottery.experiment import Lottery
        return Lottery
    if name == "LotterySettings":
        from connectome.lottery.settings import LotterySettings
        return LotterySettings
    raise AttributeError(name)
