"""Methods by name, filled by `@METHODS.register` in each method's module.

The table lives below the methods so that the settings, which the methods read, can ask it what a
method reads (connectome.pruning.settings) without importing the methods: its first read imports the
package that registers them (connectome.pruning.methods), once.
"""

from connectome.registry import Registry

METHODS = Registry("method", package="connectome.pruning.methods")
