"""Every ``nn.Module`` ecomgen trains, exports or serves, with its checkpoint I/O.

No training loops here: ``training/`` imports these, ``export/`` imports these, and this
package imports neither. Each model module exposes ``load_networks(checkpoint_dir)`` and
``tiny_networks(seed)`` (random weights, for fast tests), keyed by network step name.
"""
