from .dynamic_visualizer import (DynamicVisualizer, collect_decision_maps, image_maps,
                                 map_to_image)

__all__ = ['DynamicVisualizer', 'collect_decision_maps', 'image_maps', 'map_to_image']
